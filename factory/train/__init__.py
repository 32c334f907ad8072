"""train stage of the factory pipeline."""
