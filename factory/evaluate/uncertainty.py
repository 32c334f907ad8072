"""Uncertainty of verification numbers: the whole protocol bootstrapped over subjects, and paired comparisons.

A benchmark of 600 pairs per group gives group accuracies that move by a point or more between two draws of people,
so a fairness number is only worth its interval. Pairs of one person are correlated (one face, one set of capture
conditions), so the unit of resampling is the **subject** (of a pair's first image, as in the operational
bootstrap): a replicate draws each group's subjects with replacement and weights every pair by its subject's draw
count. Groups are resampled separately (stratified): the benchmark fixed their sizes, and they share no people.

Each replicate re-runs the **whole** 10-fold protocol on the weighted pairs: the folds stay where the file puts them,
each fold's threshold is chosen again on the weighted other nine, and the held-out fold is scored at it, so the
interval includes the noise of choosing a threshold. Vectorised: every pair falls in one bin of the threshold grid,
so the correct decisions of a fold at every threshold are cumulative sums of a (replicate × bin) histogram built
with one gather and one ``reduceat``; no replicate or threshold loop.

Two artifacts evaluated on the same pairs share the same draws (they depend only on the benchmark and the seed), so
the differences of their replicates give **paired** intervals: far narrower than comparing two separate intervals,
because both artifacts meet the same hard people. Per group, McNemar's exact test on the pair decisions (pairs only
one of the two gets right) says whether the two differ at all.

Intervals are bias-corrected percentile intervals (Efron's BC) of the replicates: order statistics (so an
infinite SER stays infinite instead of becoming NaN by interpolation) at ``Φ(2·z0 ± z)``, where ``z0 = Φ⁻¹(share of
replicates below the estimate)``. Re-choosing thresholds per replicate makes the replicates of an accuracy sit
above the estimate by a few tenths of a point, and more so for a noisier artifact: a plain percentile interval of a
difference then lies mostly on one side of its own estimate (measured on the demo: an INT8 drop of 1.12 points with
the interval [0.67, 2.46]); BC moves the tails back so the estimate sits where the replicates' median would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from factory.evaluate.verification import N_FOLDS, THRESHOLDS, fold_slices

DEFAULT_REPLICATES = 1000
DEFAULT_LEVEL = 0.95
_BLOCK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Resampling:
    """The subject draws of one benchmark, shared by every artifact evaluated on it (so comparisons are paired).

    Attributes:
        counts: ``R×C`` float32, how often each cluster is drawn in each replicate (its pairs get that weight).
        clusters: cluster index (``0..C-1``) of every pair; a cluster is one subject within one group.
        level: confidence level of the intervals.
        seed: seed of the draws.
        unit: ``"subject"`` when some subject has several pairs, else ``"pair"`` (a ``.bin`` has no identities).
    """

    counts: np.ndarray
    clusters: np.ndarray
    level: float
    seed: int
    unit: str

    @property
    def replicates(self) -> int:
        """Number of bootstrap replicates."""
        return int(self.counts.shape[0])

    def to_dict(self) -> dict[str, object]:
        """What a reader needs to know about the intervals."""
        return {"level": self.level, "replicates": self.replicates, "seed": self.seed, "unit": self.unit}


def resample_subjects(
    groups: np.ndarray,
    subjects: np.ndarray,
    replicates: int = DEFAULT_REPLICATES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Resampling:
    """Draw every group's subjects with replacement, ``replicates`` times.

    Args:
        groups: group index of every pair.
        subjects: subject of every pair (of its first image).
        replicates: number of bootstrap replicates (at least 1).
        level: confidence level, in (0, 1).
        seed: the draws depend only on it and the benchmark, so every artifact meets the same replicates.
    """
    if replicates < 1:
        raise ValueError(f"need at least 1 bootstrap replicate, got {replicates}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    groups, subjects = np.asarray(groups), np.asarray(subjects)
    if groups.shape != subjects.shape or groups.ndim != 1:
        raise ValueError(f"groups {groups.shape} and subjects {subjects.shape} must both have one entry per pair")
    # One cluster per (group, subject), numbered group by group so each group's clusters are one contiguous block.
    subject_codes = np.unique(subjects, return_inverse=True)[1].reshape(-1)  # ids may be strings in a user's .npz
    keys = np.stack([groups.astype(np.int64), subject_codes], axis=1)
    unique, clusters = np.unique(keys, axis=0, return_inverse=True)
    clusters = clusters.reshape(-1)
    rng = np.random.default_rng(seed)
    counts = np.zeros((replicates, len(unique)), np.float32)
    for g in np.unique(unique[:, 0]):
        block = np.flatnonzero(unique[:, 0] == g)
        draws = block[rng.integers(0, len(block), size=(replicates, len(block)))]
        rows = np.repeat(np.arange(replicates), len(block))
        # Tallying draws with one bincount over (replicate, cluster) cells: no per-replicate Python loop.
        tally = np.bincount(rows * len(unique) + draws.reshape(-1), minlength=replicates * len(unique))
        counts += tally.reshape(replicates, len(unique)).astype(np.float32)
    unit = "subject" if len(unique) < len(groups) else "pair"
    return Resampling(counts=counts, clusters=clusters, level=float(level), seed=int(seed), unit=unit)


def protocol_replicates(
    dist: np.ndarray,
    issame: np.ndarray,
    weights: np.ndarray,
    clusters: np.ndarray,
    n_folds: int = N_FOLDS,
    thresholds: np.ndarray = THRESHOLDS,
) -> np.ndarray:
    """The 10-fold protocol accuracy of every replicate, with pairs weighted by their cluster's draw count.

    Args:
        dist: squared distance of every pair (file order decides the folds).
        issame: genuine flag of every pair.
        weights: ``R×C`` draw counts of the clusters.
        clusters: cluster of every pair (column of ``weights``).
        n_folds: folds of the protocol.
        thresholds: the accuracy grid.

    Returns:
        ``R`` accuracies; with all weights 1 each equals :func:`~factory.evaluate.verification.verify_distances`'s.
    """
    dist, issame = np.asarray(dist, np.float64), np.asarray(issame, bool)
    replicates = weights.shape[0]
    n_bins = len(thresholds) + 1
    fold_of = np.empty(len(dist), np.int64)
    for k, fold in enumerate(fold_slices(len(dist), n_folds)):
        fold_of[fold] = k
    # Bin b = thresholds at or below the distance: a genuine pair is right at grid index j >= b (dist < t_j), an
    # impostor at j < b (dist >= t_j).
    bins = np.searchsorted(thresholds, dist, side="right")
    cell = (fold_of * 2 + issame) * n_bins + bins
    n_cells = n_folds * 2 * n_bins
    # Pairs of one cluster in one cell always carry the same weight: gather each (cluster, cell) once, times its size.
    unique, size = np.unique(np.asarray(clusters, np.int64) * n_cells + cell, return_counts=True)
    owner, cell_of = unique // n_cells, unique % n_cells
    order = np.argsort(cell_of, kind="stable")
    owner, size, cell_sorted = owner[order], size[order].astype(np.float32), cell_of[order]
    starts = np.flatnonzero(np.r_[True, np.diff(cell_sorted) != 0])
    histogram = np.zeros((replicates, n_cells), np.float32)
    block = max(1, _BLOCK_ELEMENTS // max(len(owner), 1))  # replicates at once: temporaries stay tens of MB
    for first in range(0, replicates, block):
        rows = slice(first, first + block)
        histogram[rows, cell_sorted[starts]] = np.add.reduceat(weights[rows][:, owner] * size, starts, axis=1)
    histogram = histogram.reshape(replicates, n_folds, 2, n_bins)
    impostor, genuine = histogram[:, :, 0], histogram[:, :, 1]
    impostor_total = impostor.sum(axis=2, keepdims=True)
    correct = np.cumsum(genuine, axis=2)[..., :-1] + (impostor_total - np.cumsum(impostor, axis=2)[..., :-1])
    total = correct.sum(axis=1, keepdims=True)
    best = np.argmax(total - correct, axis=2)  # first maximum on the other nine folds, as np.argmax in insightface
    fold_size = genuine.sum(axis=2) + impostor_total[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        fold_accuracy = np.take_along_axis(correct, best[..., None], axis=2)[..., 0] / fold_size
    return np.nanmean(fold_accuracy, axis=1)  # a fold left empty by a replicate has no accuracy, not zero


def interval(samples: np.ndarray, level: float, estimate: float | None = None) -> list[float] | None:
    """Interval of the non-NaN replicates (order statistics: infinities stay infinite); None if there are none.

    With the point ``estimate`` it is bias-corrected (BC): the tails move by ``2·z0`` on the normal scale, ``z0``
    from the share of replicates below the estimate (ties count half). Without it (or with a NaN estimate), the
    plain percentile interval.
    """
    from scipy.stats import norm

    samples = np.asarray(samples, np.float64)
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return None
    tail = round((1.0 - level) / 2.0, 12)  # 1 - 0.95 is 0.05000000000000004: would skip an order statistic
    tails = np.array([tail, 1.0 - tail])
    if estimate is not None and not math.isnan(estimate):
        below = (np.sum(samples < estimate) + 0.5 * np.sum(samples == estimate)) / len(samples)
        # one replicate's worth from either end: all replicates on one side would make z0 infinite
        below = min(max(below, 0.5 / len(samples)), 1.0 - 0.5 / len(samples))
        z0 = norm.ppf(below)
        tails = norm.cdf(2.0 * z0 + norm.ppf(tails))
    low, high = np.quantile(samples, tails, method="inverted_cdf")
    return [float(low), float(high)]


def summary_replicates(group_replicates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mean, sample STD and SER of the group accuracies, per replicate (groups in the mapping's order)."""
    accuracies = np.stack(list(group_replicates.values()), axis=1).astype(np.float64)  # R × groups
    worst_error, best_error = 1.0 - accuracies.min(axis=1), 1.0 - accuracies.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ser = np.where(best_error > 0, worst_error / np.where(best_error > 0, best_error, 1.0), np.inf)
    ser[(best_error <= 0) & (worst_error <= 0)] = np.nan  # no group makes errors: undefined, as the point value
    std = accuracies.std(axis=1, ddof=1) if accuracies.shape[1] > 1 else np.full(len(accuracies), np.nan)
    return {"mean": accuracies.mean(axis=1), "std": std, "ser": ser}


def mcnemar(against_correct: np.ndarray, artifact_correct: np.ndarray) -> dict[str, float | int]:
    """McNemar's exact test on paired decisions: do two artifacts err on different pairs more than by chance?

    Only discordant pairs count: ``b`` right for ``against`` only, ``c`` for the artifact only; under "no
    difference" ``c ~ Binomial(b + c, 1/2)``. Two-sided exact p-value (1.0 when no pair is discordant).
    """
    from scipy.stats import binomtest

    against_correct, artifact_correct = np.asarray(against_correct, bool), np.asarray(artifact_correct, bool)
    if against_correct.shape != artifact_correct.shape:
        raise ValueError(f"decisions of {against_correct.shape} and {artifact_correct.shape} pairs cannot be paired")
    b = int((against_correct & ~artifact_correct).sum())
    c = int((~against_correct & artifact_correct).sum())
    p_value = 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5).pvalue)
    pairs = int(len(against_correct))
    return {"pairs": pairs, "only_against_correct": b, "only_artifact_correct": c, "p_value": p_value}


def paired_difference(artifact: np.ndarray, against: np.ndarray, point: float, level: float) -> dict[str, object]:
    """``{"delta": point, "ci": interval of artifact - against over the shared replicates}``."""
    if artifact.shape != against.shape:
        raise ValueError("replicates of different resamplings cannot be paired")
    return {"delta": point, "ci": interval(artifact - against, level, point)}


def finite_or_none(value: float) -> float | None:
    """A JSON-safe float (NaN becomes None)."""
    return None if math.isnan(value) else value
