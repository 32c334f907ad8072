"""Evaluate an embedding function on a pair benchmark: per-group protocol accuracy and fairness summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from factory.data.benchmark import PairBenchmark
from factory.evaluate.fairness import FairnessSummary, summarize_groups
from factory.evaluate.operational import DEFAULT_TARGETS, operational_fairness
from factory.evaluate.verification import (
    VerificationResult,
    fuse_flip,
    l2_normalize,
    pair_distances,
    tar_at_far,
    verify_pairs,
)

Embed = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BenchmarkResult:
    """Protocol result per group and over all pairs, and the fairness summary of the group accuracies."""

    groups: dict[str, VerificationResult]
    overall: VerificationResult
    fairness: FairnessSummary
    tar_at_far: dict[str, dict[str, float]]
    operational: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The evaluation JSON (schema in README: groups, overall with tar_at_far, fairness, operational)."""
        return {
            "groups": {name: result.to_dict() for name, result in self.groups.items()},
            "overall": {**self.overall.to_dict(), "tar_at_far": self.tar_at_far},
            "fairness": self.fairness.to_dict(),
            "operational": self.operational,
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


def evaluate_embeddings(
    embeddings: np.ndarray,
    bench: PairBenchmark,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
    replicates: int = 1000,
) -> BenchmarkResult:
    """Everything measured on one benchmark's embeddings.

    The protocol per group (each group's pairs in file order, so its own 10 folds) and over all pairs, TAR@FAR per
    fold, and operational fairness at one global threshold per target FMR.
    """
    if len(embeddings) != len(bench.images):
        raise ValueError(f"{len(embeddings)} embeddings for a benchmark of {len(bench.images)} images")
    groups = {}
    for name in bench.group_names:
        pairs = bench.group_indices(name)
        rows = np.stack([2 * pairs, 2 * pairs + 1], axis=1).reshape(-1)
        groups[name] = verify_pairs(embeddings[rows], bench.issame[pairs])
    overall = verify_pairs(embeddings, bench.issame)
    fairness = summarize_groups({name: r.accuracy_mean for name, r in groups.items()})
    dist = pair_distances(embeddings)
    operational = operational_fairness(
        1.0 - dist / 2.0, bench.issame, bench.groups, bench.group_names, bench.subjects[0::2], targets, replicates
    )
    far = {f"{t:.0e}": tar_at_far(dist, bench.issame, t) for t in targets}
    return BenchmarkResult(groups, overall, fairness, tar_at_far=far, operational=operational)
