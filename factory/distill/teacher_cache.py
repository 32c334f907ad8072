"""The frozen teacher's embeddings of a batch, each sample of a static dataset computed once per run.

A label-free KD task needs the teacher's embedding of every image it trains on. Online synthetic faces never come
back, but a static dataset (files, a ``procedural_set``, a real/synthetic mix's real part and fixed synthetic part)
is drawn again every epoch, and with a frozen teacher in eval mode its embedding of an image never changes. Such
batches carry ``keys`` (int64 per sample: ``2·image + flip``, offset past the first set's keys for a mix's second
set, so a key names one image of the batch's source; −1 for a sample that is never repeated;
:mod:`factory.data.static`), and :class:`TeacherEmbeddings` keeps the embedding of every key it has computed, up
to ``capacity_mb`` (later keys are computed every time; nothing is evicted, so what is cached never depends on the
order of draws).

The cache never changes a result. A CPU forward does not give an image the same bits in batches of different sizes
(oneDNN and MKL choose kernels and blockings by shape: iresnet_nano's embeddings of one image differ by about 1e-6
between a batch of 1 and one of 64), so an embedding computed in one batch and served in another could differ
from a fresh forward. Every keyed sample is therefore embedded in a canonical forward, chunks of exactly
:data:`CHUNK` images (the last one zero-padded), in which an image's embedding depends on that image alone; a cache
hit is the result a fresh canonical forward gives, bit for bit, and ``distill.teacher_cache_mb: 0`` (no cache)
trains exactly the same student (``tests/test_teacher_cache.py``). Unkeyed samples are embedded together in one
plain forward. The cache is not saved with a checkpoint: a resumed run recomputes what it needs, the same bits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from factory.train.tasks import model_input

CHUNK = 16  # images per canonical forward: batched (fast on CPU), and its shape never depends on the batch
DEFAULT_CAPACITY_MB = 1024.0


class TeacherEmbeddings:
    """The teacher's embedding of every sample of a batch, through a cache for the keyed (static) ones.

    Args:
        teacher: the frozen teacher (put in eval mode here: its embedding of an image must not depend on the batch).
        capacity_mb: memory the cached embeddings may take; 0 caches nothing (keyed samples are still embedded in
            the canonical forward, so the results are the same).
    """

    def __init__(self, teacher: nn.Module, capacity_mb: float = DEFAULT_CAPACITY_MB) -> None:
        if capacity_mb < 0:
            raise ValueError(f"teacher cache capacity must be >= 0 MB, got {capacity_mb}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.capacity = int(capacity_mb * 2**20)
        self._cached: dict[int, Tensor] = {}
        self._bytes = 0
        self.hits = self.computed = self.unkeyed = 0  # samples served from the cache, embedded keyed, unkeyed

    @torch.no_grad()
    def __call__(self, batch: dict[str, Any]) -> Tensor:
        """The teacher's embeddings of ``batch["pixels"]`` (N×D), looked up by ``batch["keys"]`` where given."""
        pixels, keys = batch["pixels"], batch.get("keys")
        if keys is None:
            self.unkeyed += len(pixels)
            return self._forward(pixels)
        keys = keys.detach().cpu()
        keyed = torch.nonzero(keys >= 0).flatten()
        unkeyed = torch.nonzero(keys < 0).flatten()
        parts: list[tuple[Tensor, Tensor]] = []
        if len(unkeyed):
            self.unkeyed += len(unkeyed)
            parts.append((unkeyed, self._forward(pixels[unkeyed.to(pixels.device)])))
        if len(keyed):
            parts.append((keyed, self._lookup(pixels, keyed, keys[keyed].tolist())))
        first = parts[0][1]
        out = torch.empty(len(pixels), *first.shape[1:], dtype=first.dtype, device=first.device)
        for rows, values in parts:
            out[rows.to(out.device)] = values
        return out

    def _lookup(self, pixels: Tensor, rows: Tensor, keys: list[int]) -> Tensor:
        """Embeddings of the keyed ``rows``: cached ones looked up, the rest embedded canonically (once per key)."""
        missing: dict[int, int] = {}  # key -> the first row that has it (a key drawn twice is embedded once)
        for row, key in zip(rows.tolist(), keys, strict=True):
            if key not in self._cached and key not in missing:
                missing[key] = row
        fresh: dict[int, Tensor] = {}
        if missing:
            where = torch.tensor(list(missing.values()), device=pixels.device)
            values = self.canonical(pixels[where])
            for key, value in zip(missing, values, strict=True):
                fresh[key] = value.clone()  # a row of its own: a view would keep the whole chunk alive
                size = value.numel() * value.element_size()
                if self._bytes + size <= self.capacity:
                    self._cached[key] = fresh[key]
                    self._bytes += size
        self.computed += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([fresh[k] if k in fresh else self._cached[k] for k in keys])

    def canonical(self, pixels: Tensor) -> Tensor:
        """The teacher's embeddings of ``pixels`` in chunks of exactly :data:`CHUNK` images (the last one padded).

        An image's embedding then depends on that image alone, not on the other images it is embedded with.
        """
        n = len(pixels)
        padded = torch.cat([pixels, pixels.new_zeros((-n % CHUNK, *pixels.shape[1:]))])
        return torch.cat([self._forward(chunk) for chunk in padded.split(CHUNK)])[:n]

    def _forward(self, pixels: Tensor) -> Tensor:
        return self.teacher(model_input(self.teacher, pixels))

    def report(self) -> dict[str, Any]:
        """How the teacher's embeddings were obtained: samples served from the cache, computed, and unkeyed."""
        return {
            "hits": self.hits,
            "computed": self.computed,
            "unkeyed": self.unkeyed,
            "entries": len(self._cached),
            "megabytes": round(self._bytes / 2**20, 3),
        }
