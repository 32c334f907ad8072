"""data stage of the factory pipeline."""
