"""The built-in procedural face world: aligned 112×112 cartoon faces of several demographic groups, no real data.

- :mod:`~factory.data.world.taxonomy`: the demographic groups, read from a YAML taxonomy (``procedural.yaml``).
- :mod:`~factory.data.world.renderer`: :class:`~factory.data.world.renderer.ProceduralFaceWorld`, which turns
  identity latents of those groups into faces behind a StyleGAN2-ADA-like ``mapping``/``synthesis`` interface.
- :mod:`~factory.data.world.splits`: identity splits and training batches, pure functions of their seeds.
- :mod:`~factory.data.world.seeding`: the process-independent seeds everything above is drawn from.
- :mod:`~factory.data.world.stylegan`: a user's StyleGAN2-ADA generator behind the same interface.
"""
