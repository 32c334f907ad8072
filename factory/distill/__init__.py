"""distill stage of the factory pipeline."""
