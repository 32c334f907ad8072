"""Evaluate an embedding function on a pair benchmark: per-group protocol accuracy, fairness, and their intervals.

Each artifact is embedded once; every measure (protocol, TAR@FAR, operational rates, bootstrap intervals, paired
comparisons) reuses those embeddings and the pair distances computed from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from factory.data.benchmark import PairBenchmark
from factory.evaluate.fairness import FairnessSummary, ser_to_json, summarize_groups
from factory.evaluate.operational import DEFAULT_TARGETS, operational_fairness, support_note, unsupported
from factory.evaluate.uncertainty import (
    DEFAULT_LEVEL,
    DEFAULT_REPLICATES,
    Resampling,
    interval,
    mcnemar,
    paired_difference,
    protocol_replicates,
    resample_subjects,
    summary_replicates,
)
from factory.evaluate.verification import (
    VerificationResult,
    correct_decisions,
    pair_distances,
    tar_at_far,
    verify_distances,
)
from factory.runtime.embedding import embed_images as runtime_embed_images

Embed = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BenchmarkResult:
    """Protocol result per group and over all pairs, the fairness summary, and their bootstrap intervals.

    ``resampling``, ``group_replicates`` and ``group_correct`` are kept in memory (not in the JSON) so that two
    results on the same benchmark can be compared pair by pair (:func:`compare_results`).
    """

    groups: dict[str, VerificationResult]
    overall: VerificationResult
    fairness: FairnessSummary
    tar_at_far: dict[str, dict[str, Any]]
    operational: dict[str, Any]
    resampling: Resampling
    group_replicates: dict[str, np.ndarray] = field(repr=False, compare=False)
    # per group, per pair in file order: did the protocol get it right (McNemar's input)
    group_correct: dict[str, np.ndarray] = field(repr=False, compare=False)

    @property
    def summary_replicates(self) -> dict[str, np.ndarray]:
        """Mean, sample STD and SER of the group accuracies in every replicate."""
        return summary_replicates(self.group_replicates)

    def to_dict(self) -> dict[str, Any]:
        """The evaluation JSON (schema in README: groups, overall with tar_at_far, fairness, operational, intervals)."""
        level = self.resampling.level
        summary = self.summary_replicates
        ser = interval(summary["ser"], level, self.fairness.ser)
        return {
            "groups": {
                name: {**result.to_dict(), "ci": interval(self.group_replicates[name], level, result.accuracy_mean)}
                for name, result in self.groups.items()
            },
            "overall": {**self.overall.to_dict(), "tar_at_far": self.tar_at_far},
            "fairness": {
                **self.fairness.to_dict(),
                "ci": {
                    "mean": interval(summary["mean"], level, self.fairness.mean),
                    "std": interval(summary["std"], level, self.fairness.std),
                    "ser": None if ser is None else [ser_to_json(v) for v in ser],
                },
            },
            "uncertainty": self.resampling.to_dict(),
            "operational": self.operational,
        }


def embed_images(
    embed: Embed, images: np.ndarray, batch_size: int = 64, flip: bool = True, progress: str | None = None
) -> np.ndarray:
    """:func:`factory.runtime.embedding.embed_images` with a progress bar named ``progress`` (None: no bar)."""

    def wrap(starts: range) -> Any:
        return tqdm(starts, desc=progress, unit="batch", disable=progress is None, leave=False)

    return runtime_embed_images(embed, images, batch_size, flip, wrap)


def resample_benchmark(
    bench: PairBenchmark, replicates: int = DEFAULT_REPLICATES, level: float = DEFAULT_LEVEL, seed: int = 0
) -> Resampling:
    """The subject draws of ``bench`` (pairs grouped by the subject of their first image)."""
    return resample_subjects(bench.groups, bench.subjects[0::2], replicates, level, seed)


def evaluate_embeddings(
    embeddings: np.ndarray,
    bench: PairBenchmark,
    targets: tuple[float, ...] = DEFAULT_TARGETS,
    replicates: int = DEFAULT_REPLICATES,
    level: float = DEFAULT_LEVEL,
    resampling: Resampling | None = None,
) -> BenchmarkResult:
    """Everything measured on one benchmark's embeddings.

    The protocol per group (each group's pairs in file order, so its own 10 folds) and over all pairs, TAR@FAR per
    fold, operational fairness at one global threshold per target FMR, and bootstrap intervals over subjects.

    Args:
        embeddings: ``2P×D`` pair embeddings of ``bench``.
        bench: the benchmark.
        targets: FMR targets of the operational measures.
        replicates: bootstrap replicates (when ``resampling`` is not given).
        level: confidence level (when ``resampling`` is not given).
        resampling: shared draws; pass the same one for every artifact that will be compared.
    """
    if len(embeddings) != len(bench.images):
        raise ValueError(f"{len(embeddings)} embeddings for a benchmark of {len(bench.images)} images")
    if resampling is None:
        resampling = resample_benchmark(bench, replicates, level)
    dist = pair_distances(embeddings)
    groups, group_replicates, group_correct = {}, {}, {}
    for name in bench.group_names:
        pairs = bench.group_indices(name)
        result = verify_distances(dist[pairs], bench.issame[pairs])
        groups[name] = result
        group_correct[name] = correct_decisions(dist[pairs], bench.issame[pairs], result)
        group_replicates[name] = protocol_replicates(
            dist[pairs], bench.issame[pairs], resampling.counts, resampling.clusters[pairs]
        )
    overall = verify_distances(dist, bench.issame)
    fairness = summarize_groups({name: r.accuracy_mean for name, r in groups.items()})
    operational = operational_fairness(
        1.0 - dist / 2.0,
        bench.issame,
        bench.groups,
        bench.group_names,
        bench.subjects[0::2],
        targets,
        resampling=resampling,
    )
    impostors = int((~bench.issame).sum())
    far = {}
    for target in targets:
        # insightface prints TAR@FAR whatever the impostor count; here a FAR the impostors cannot back is marked.
        note = support_note(impostors, target)
        val = tar_at_far(dist, bench.issame, target)
        far[f"{target:.0e}"] = {**{k: unsupported(v, note) for k, v in val.items()}, "supported": note is None}
    return BenchmarkResult(
        groups,
        overall,
        fairness,
        tar_at_far=far,
        operational=operational,
        resampling=resampling,
        group_replicates=group_replicates,
        group_correct=group_correct,
    )


def compare_results(artifact: BenchmarkResult, against: BenchmarkResult, against_name: str) -> dict[str, Any]:
    """Paired comparison of two results on the same pairs and draws: ``delta`` = artifact minus ``against``.

    Intervals of the change in mean accuracy, in sample STD and in every group's accuracy; per group McNemar's exact
    test on the pair decisions.
    """
    if artifact.resampling is not against.resampling and not np.array_equal(
        artifact.resampling.counts, against.resampling.counts
    ):
        raise ValueError("results were bootstrapped with different draws: they cannot be compared pair by pair")
    level = artifact.resampling.level
    mine, theirs = artifact.summary_replicates, against.summary_replicates
    groups = {}
    for name, result in artifact.groups.items():
        groups[name] = {
            **paired_difference(
                artifact.group_replicates[name],
                against.group_replicates[name],
                result.accuracy_mean - against.groups[name].accuracy_mean,
                level,
            ),
            "mcnemar": mcnemar(against.group_correct[name], artifact.group_correct[name]),
        }
    std_point = artifact.fairness.std - against.fairness.std
    return {
        "against": against_name,
        "level": level,
        "mean": paired_difference(mine["mean"], theirs["mean"], artifact.fairness.mean - against.fairness.mean, level),
        "std": None if np.isnan(std_point) else paired_difference(mine["std"], theirs["std"], std_point, level),
        "groups": groups,
    }
