"""Deployment to targets: bundles for a device, the environments and transports that run them, their reports."""
