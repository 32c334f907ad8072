"""Operational fairness at one global threshold (NIST FRVT Part 3 / ISO/IEC 19795-10 style).

A deployment runs at one threshold, so fairness is measured there: the threshold is fixed for a target FMR over
*all* impostor pairs, then every group's FMR and FNMR are read at it and summarised:

- ``max/geomean`` (NIST): the worst group's rate over the geometric mean of all groups' rates;
- ``max/min``: the worst over the best group;
- GARBE (Howard et al.): ``α·Gini(FMR) + (1-α)·Gini(FNMR)``, α = 0.5, Gini with the ``n/(n-1)`` correction;
- FDR (Pereira & Marcel): ``1 - (α·max|ΔFMR| + (1-α)·max|ΔFNMR|)``, α = 0.5.

Confidence intervals come from a subject-level bootstrap (pairs are resampled by the subject of their first image,
so a subject's correlated pairs move together). A group with fewer than ``3 / FMR`` impostor pairs cannot support
the target (rule of three: zero errors only bound the FMR at ``3 / n``) and is flagged. Ratios that divide by a zero
error rate are reported as ``"inf"`` or ``"not estimable"``, never a crash.

Scores are cosine similarities of unit embeddings (``1 - d/2`` for the protocol's squared distance ``d``); a pair
is accepted when its score is at least the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

ALPHA = 0.5
DEFAULT_TARGETS = (1e-3, 1e-4)


def threshold_at_fmr(impostor_scores: np.ndarray, target: float) -> float:
    """The lowest threshold whose FMR over ``impostor_scores`` is at most ``target`` (the most genuine accepts)."""
    scores = np.sort(np.asarray(impostor_scores, np.float64))[::-1]
    if len(scores) == 0:
        raise ValueError("no impostor pairs: a threshold for a target FMR cannot be set")
    allowed = math.floor(target * len(scores) + 1e-9)
    if allowed >= len(scores):
        return -math.inf
    return float(np.nextafter(scores[allowed], math.inf))  # strictly above the first impostor that must be rejected


def supports_target(impostors: int, target: float) -> bool:
    """Rule of three: ``n`` impostor pairs with no false match bound the FMR at ``3/n``, so need ``n >= 3/target``."""
    return impostors >= 3.0 / target


def gini(values: Sequence[float]) -> float:
    """Gini coefficient with the small-sample ``n/(n-1)`` correction used by GARBE; 0 when all values are 0."""
    x = np.asarray(values, np.float64)
    n = len(x)
    if n < 2 or x.mean() == 0:
        return 0.0
    return float(n / (n - 1) * np.abs(x[:, None] - x[None, :]).sum() / (2 * n * n * x.mean()))


def ratio(numerator: float, denominator: float) -> float | str:
    """A ratio of error rates, JSON-safe: ``"inf"`` over a zero rate, ``"not estimable"`` for 0/0."""
    if denominator > 0:
        return numerator / denominator
    return "not estimable" if numerator == 0 else "inf"


def summary_measures(fmr: Sequence[float], fnmr: Sequence[float], alpha: float = ALPHA) -> dict[str, Any]:
    """max/geomean, max/min, GARBE and FDR of per-group FMR and FNMR."""
    fmr_a, fnmr_a = np.asarray(fmr, np.float64), np.asarray(fnmr, np.float64)

    def max_geomean(x: np.ndarray) -> float | str:
        if (x == 0).any():  # the geometric mean of rates with a zero is 0: the ratio says nothing
            return "not estimable"
        return float(x.max() / np.exp(np.log(x).mean()))

    return {
        "fmr_max_geomean": max_geomean(fmr_a),
        "fnmr_max_geomean": max_geomean(fnmr_a),
        "fmr_max_min": ratio(float(fmr_a.max()), float(fmr_a.min())),
        "fnmr_max_min": ratio(float(fnmr_a.max()), float(fnmr_a.min())),
        "garbe": alpha * gini(fmr_a) + (1 - alpha) * gini(fnmr_a),
        "fdr": 1.0 - (alpha * float(np.ptp(fmr_a)) + (1 - alpha) * float(np.ptp(fnmr_a))),
    }


def _bootstrap_rates(
    accepted: np.ndarray, issame: np.ndarray, subjects: np.ndarray, replicates: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """FMR and FNMR of ``replicates`` subject-level resamples (pairs weighted by their subject's draw count)."""
    unique, inverse = np.unique(subjects, return_inverse=True)
    counts = rng.multinomial(len(unique), np.full(len(unique), 1.0 / len(unique)), size=replicates)
    weights = counts[:, inverse].astype(np.float64)  # replicates × pairs
    imp, gen = ~issame, issame
    with np.errstate(invalid="ignore", divide="ignore"):
        fmr = (weights * (imp & accepted)).sum(1) / (weights * imp).sum(1)
        fnmr = (weights * (gen & ~accepted)).sum(1) / (weights * gen).sum(1)
    return fmr, fnmr


def _interval(samples: np.ndarray) -> list[float] | None:
    samples = samples[np.isfinite(samples)]
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))] if len(samples) else None


def operational_fairness(
    scores: np.ndarray,
    issame: np.ndarray,
    groups: np.ndarray,
    group_names: Sequence[str],
    subjects: np.ndarray,
    targets: Sequence[float] = DEFAULT_TARGETS,
    replicates: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-target global threshold, per-group FMR/FNMR with bootstrap intervals, and the summary measures.

    Args:
        scores: similarity per pair (higher = more alike).
        issame: genuine flag per pair.
        groups: group index per pair (into ``group_names``).
        group_names: group names.
        subjects: subject id per pair (of its first image), for the bootstrap.
        targets: FMR targets; each is reported with ``supported`` telling whether the data can back it.
        replicates: bootstrap replicates (0 skips the intervals).
        seed: bootstrap seed.
    """
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    groups, subjects = np.asarray(groups), np.asarray(subjects)
    if not (len(scores) == len(issame) == len(groups) == len(subjects)):
        raise ValueError("scores, issame, groups and subjects must have one entry per pair")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    impostors = scores[~issame]
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for target in targets:
        threshold = threshold_at_fmr(impostors, target)
        accepted = scores >= threshold
        per_group: dict[str, Any] = {}
        for g, name in enumerate(group_names):
            mask = groups == g
            gen, imp = issame & mask, ~issame & mask
            entry: dict[str, Any] = {
                "genuine": int(gen.sum()),
                "impostors": int(imp.sum()),
                "false_matches": int((imp & accepted).sum()),
                "false_non_matches": int((gen & ~accepted).sum()),
                "fmr": float((imp & accepted).sum() / imp.sum()) if imp.any() else None,
                "fnmr": float((gen & ~accepted).sum() / gen.sum()) if gen.any() else None,
                "fmr_supported": supports_target(int(imp.sum()), target),
            }
            if replicates and mask.any():
                fmr_b, fnmr_b = _bootstrap_rates(accepted[mask], issame[mask], subjects[mask], replicates, rng)
                entry["fmr_ci"], entry["fnmr_ci"] = _interval(fmr_b), _interval(fnmr_b)
            per_group[name] = entry
        rated = [e for e in per_group.values() if e["fmr"] is not None and e["fnmr"] is not None]
        key = f"{target:.0e}"
        out[key] = {
            "target_fmr": target,
            "threshold": threshold,
            "fmr": float((impostors >= threshold).mean()),
            "supported": supports_target(len(impostors), target),
            "groups": per_group,
            "summary": summary_measures([e["fmr"] for e in rated], [e["fnmr"] for e in rated]) if rated else None,
        }
    return out


def cross_group_fmr(
    same_group_scores: np.ndarray,
    same_group_cells: np.ndarray,
    cross_scores: np.ndarray,
    cross_cells: np.ndarray,
    n_groups: int,
    target: float = 1e-2,
) -> dict[str, Any]:
    """FMR of every (group, group) cell at one global threshold set for ``target`` over all these impostor pairs.

    Args:
        same_group_scores: impostor scores of same-group pairs.
        same_group_cells: the group of each of those pairs.
        cross_scores: impostor scores of cross-group pairs.
        cross_cells: their ``(group, group)`` (M×2).
        n_groups: matrix size.
        target: the FMR the global threshold is set for (1e-2 by default: cells hold few pairs).

    Returns:
        ``{"target", "threshold", "matrix" (n×n, symmetric, None where a cell has no pairs), "pairs"}``.
    """
    threshold = threshold_at_fmr(np.concatenate([same_group_scores, cross_scores]), target)
    hits, counts = np.zeros((n_groups, n_groups)), np.zeros((n_groups, n_groups))
    for scores, a, b in (
        (same_group_scores, same_group_cells, same_group_cells),
        (cross_scores, cross_cells[:, 0], cross_cells[:, 1]),
    ):
        np.add.at(hits, (a, b), scores >= threshold)
        np.add.at(counts, (a, b), 1)
    hits, counts = hits + hits.T - np.diag(hits.diagonal()), counts + counts.T - np.diag(counts.diagonal())
    matrix = [
        [float(h / c) if c else None for h, c in zip(hr, cr, strict=True)] for hr, cr in zip(hits, counts, strict=True)
    ]
    return {"target": target, "threshold": threshold, "matrix": matrix, "pairs": counts.astype(int).tolist()}
