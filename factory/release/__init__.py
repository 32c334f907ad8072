"""release stage of the factory pipeline."""
