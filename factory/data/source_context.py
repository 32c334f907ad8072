"""What the stage decides about a training source beyond its recipe section (:class:`SourceContext`).

Kept apart from :mod:`factory.data.sources` so modules that sources are built from can name it without importing
the registry of every source.
"""

from __future__ import annotations

from dataclasses import dataclass

from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.splits import IdentityShard


@dataclass(frozen=True)
class SourceContext:
    """What the stage decides about a source, beyond its recipe section."""

    world: ProceduralFaceWorld
    batch_size: int
    seed: int
    split: str  # procedural identities of this split only (``teacher``, ``distill``)
    labelled: bool  # identity labels needed (teacher training) or not (distillation)
    size: int = 112  # side of the images the trained model takes
    identities_per_group: int = 100  # labelled procedural identities
    # One of several teachers' part of the labelled identities (MST-KD); None: all of them. Only the procedural
    # source knows each identity's group, so the others refuse a shard rather than ignore it.
    shard: IdentityShard | None = None
