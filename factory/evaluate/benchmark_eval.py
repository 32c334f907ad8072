"""Evaluate an embedding function on a pair benchmark: per-group protocol accuracy and fairness summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from factory.data.benchmark import PairBenchmark
from factory.evaluate.fairness import FairnessSummary, summarize_groups
from factory.evaluate.verification import VerificationResult, fuse_flip, l2_normalize, verify_pairs

Embed = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BenchmarkResult:
    """Protocol result per group and over all pairs, and the fairness summary of the group accuracies."""

    groups: dict[str, VerificationResult]
    overall: VerificationResult
    fairness: FairnessSummary

    def to_dict(self) -> dict[str, Any]:
        """``{"groups": {g: {...accuracy_mean...}}, "overall": {...}, "fairness": {mean, std, ser, ...}}``."""
        return {
            "groups": {name: result.to_dict() for name, result in self.groups.items()},
            "overall": self.overall.to_dict(),
            "fairness": self.fairness.to_dict(),
        }


def embed_images(
    embed: Embed, images: np.ndarray, batch_size: int = 64, flip: bool = True, progress: str | None = None
) -> np.ndarray:
    """Unit embeddings of uint8 ``N×3×H×W`` images; with ``flip``, fused with the mirrored images' (insightface)."""
    out = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=progress, unit="batch", disable=progress is None, leave=False):
        batch = images[start : start + batch_size]
        features = np.asarray(embed(batch), dtype=np.float64)
        if flip:
            features = fuse_flip(features, np.asarray(embed(np.ascontiguousarray(batch[..., ::-1])), np.float64))
        out.append(l2_normalize(features))
    return np.concatenate(out).astype(np.float32)


def evaluate_embeddings(embeddings: np.ndarray, bench: PairBenchmark) -> BenchmarkResult:
    """The protocol per group (each group's pairs in file order, so its own 10 folds) and over all pairs."""
    if len(embeddings) != len(bench.images):
        raise ValueError(f"{len(embeddings)} embeddings for a benchmark of {len(bench.images)} images")
    groups = {}
    for name in bench.group_names:
        pairs = bench.group_indices(name)
        rows = np.stack([2 * pairs, 2 * pairs + 1], axis=1).reshape(-1)
        groups[name] = verify_pairs(embeddings[rows], bench.issame[pairs])
    overall = verify_pairs(embeddings, bench.issame)
    fairness = summarize_groups({name: r.accuracy_mean for name, r in groups.items()})
    return BenchmarkResult(groups=groups, overall=overall, fairness=fairness)


def evaluate_benchmark(
    embed: Embed, bench: PairBenchmark, batch_size: int = 64, flip: bool = True, progress: str | None = None
) -> BenchmarkResult:
    """Embed every benchmark image with ``embed`` and run :func:`evaluate_embeddings`."""
    return evaluate_embeddings(embed_images(embed, bench.images, batch_size, flip, progress), bench)
