"""models stage of the factory pipeline."""
