"""export stage of the factory pipeline."""
