"""Process-independent seeds: every random draw of the procedural world and of its batches starts here.

Seeds are hashed from readable parts (a purpose, the run seed, a split name, a step), so a batch is a pure function
of those parts in any process: training resumes exactly, and different splits or purposes draw independent streams.
"""

from __future__ import annotations

import hashlib

import torch


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` that is the same in every process (unlike ``hash()``, which is salted)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`stable_seed` of ``parts``."""
    return torch.Generator().manual_seed(stable_seed(*parts))
