"""evaluate stage of the factory pipeline."""
