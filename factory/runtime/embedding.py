"""Embedding faces the insightface way, in numpy: flip fusion and unit length (``../shared/REFERENCE.md`` §3).

Shared by the build machine's validation and the on-target runner, so both turn the same uint8 faces into the same
embeddings with the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

Embed = Callable[[np.ndarray], np.ndarray]


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float64 for the protocol's arithmetic)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def fuse_flip(embeddings: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """Insightface flip fusion: the image's and its mirror's embeddings added, then L2-normalised."""
    if embeddings.shape != flipped.shape:
        raise ValueError(f"embeddings {embeddings.shape} and flipped embeddings {flipped.shape} differ in shape")
    return l2_normalize(np.asarray(embeddings, np.float64) + np.asarray(flipped, np.float64))


def embed_images(
    embed: Embed,
    images: np.ndarray,
    batch_size: int = 64,
    flip: bool = True,
    wrap: Callable[[Iterable[int]], Iterable[int]] = lambda starts: starts,
) -> np.ndarray:
    """Unit embeddings of uint8 ``N×3×H×W`` images; with ``flip``, fused with the mirrored images' (insightface).

    The mirrored images ride in the same call as the originals (one batch of ``2×batch_size``): one runtime call per
    batch instead of two. ``wrap`` may decorate the batch loop (a progress bar).
    """
    out = []
    for start in wrap(range(0, len(images), batch_size)):
        batch = images[start : start + batch_size]
        if flip:
            both = np.asarray(embed(np.concatenate([batch, batch[..., ::-1]])), np.float64)
            features = fuse_flip(both[: len(batch)], both[len(batch) :])
        else:
            features = np.asarray(embed(batch), dtype=np.float64)
        out.append(l2_normalize(features))
    return np.concatenate(out).astype(np.float32)


def pair_similarities(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair of unit embeddings laid out as rows ``2k`` and ``2k+1``."""
    e = np.asarray(embeddings, np.float64)
    return np.sum(e[0::2] * e[1::2], axis=1)
