"""compress stage of the factory pipeline."""
