"""Operational fairness at one global threshold (NIST FRVT Part 3 / ISO/IEC 19795-10 style).

A deployment runs at one threshold, so fairness is measured there: the threshold is fixed for a target FMR over
*all* impostor pairs, then every group's FMR and FNMR are read at it and summarised:

- ``max/geomean`` (NIST): the worst group's rate over the geometric mean of all groups' rates;
- ``max/min``: the worst over the best group;
- GARBE (Howard et al.): ``α·Gini(FMR) + (1-α)·Gini(FNMR)``, α = 0.5, Gini with the ``n/(n-1)`` correction;
- FDR (Pereira & Marcel): ``1 - (α·max|ΔFMR| + (1-α)·max|ΔFNMR|)``, α = 0.5.

Confidence intervals come from a subject-level bootstrap (pairs are resampled by the subject of their first image,
so a subject's correlated pairs move together). A group with fewer than ``3 / FMR`` impostor pairs cannot support
the target (rule of three: zero errors only bound the FMR at ``3 / n``): it is flagged and its FMR marked (below).
Ratios that divide by a zero error rate are reported as ``"inf"`` or ``"not estimable"``, never a crash.

Scores are cosine similarities of unit embeddings (``1 - d/2`` for the protocol's squared distance ``d``); a pair
is accepted when its score is at least the threshold.

**Unsupported figures.** A figure the impostor count cannot back is never written as a plain number: it is the
object ``{"unsupported": WHY, "estimate": VALUE}`` (:func:`unsupported`), where ``WHY`` starts with ``"rule of 3:"``
and names the impostor count and the smallest FMR it supports, and ``VALUE`` is what the data gave (a number, an
interval ``[low, high]``, ``"inf"``/``"not estimable"`` or ``null``). Which figures are marked:

- the target is unsupported overall (fewer than ``3 / target`` impostor pairs): the threshold, the overall FMR, every
  group's FMR and FNMR and their intervals (the FNMR is read at a threshold the data cannot place), and every
  summary measure;
- the target is supported but a group has fewer than ``3 / target`` impostor pairs: that group's FMR and its interval,
  and the summary measures built on FMR (``fmr_max_geomean``, ``fmr_max_min``, ``garbe``, ``fdr``); its FNMR at the
  supported threshold stays a number;
- in :func:`cross_group_fmr`, the threshold and every cell when the target is unsupported overall, else each cell with
  fewer than ``3 / target`` pairs.

Counts (``impostors``, ``false_matches``, ...) are observations, not estimates, and stay numbers. Readers use
:func:`is_unsupported`, :func:`estimate` and :func:`format_figure` rather than testing for the keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from factory.evaluate.uncertainty import Resampling, interval, resample_subjects

ALPHA = 0.5
DEFAULT_TARGETS = (1e-3, 1e-4)
# Summary measures that use no FMR: they stay numbers when only some groups' FMR is unsupported.
FNMR_ONLY = frozenset({"fnmr_max_geomean", "fnmr_max_min"})


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


def required_impostors(target: float) -> int:
    """The fewest impostor pairs that support ``target`` (rule of three)."""
    return math.ceil(3.0 / target - 1e-9)  # 3 / 1e-3 is 3000.0000000000005 in floating point


def support_note(impostors: int, target: float, where: str = "") -> str | None:
    """Why ``impostors`` pairs cannot back FMR ``target``, or None when they can.

    Args:
        impostors: impostor pairs the figure is measured on.
        target: the FMR target.
        where: what those pairs are (``"group 'a'"``, ``"cell beta/gamma"``); empty for all of them.
    """
    if supports_target(impostors, target):
        return None
    pairs = f"{where} has {impostors} impostor pairs" if where else f"{impostors} impostor pairs"
    best = f"FMR >= {3.0 / impostors:.1e} at best" if impostors else "no FMR at all"
    return f"rule of 3: {pairs}, which support {best}, not {target:.0e} (needs {required_impostors(target)})"


def unsupported(value: Any, why: str | None) -> Any:
    """``value`` marked as a figure the data cannot back (``{"unsupported": why, "estimate": value}``).

    ``value`` is returned unchanged when ``why`` is None (the figure is supported) or when it is None (there is no
    figure to mark).
    """
    if why is None or value is None:
        return value
    return {"unsupported": why, "estimate": value}


def is_unsupported(value: Any) -> bool:
    """Whether ``value`` is a figure marked by :func:`unsupported`."""
    return isinstance(value, dict) and "unsupported" in value


def estimate(value: Any) -> Any:
    """The value inside a marked figure, or ``value`` itself: for plots and comparisons that show the mark apart."""
    return value["estimate"] if is_unsupported(value) else value


def format_figure(value: Any, spec: str = ".4g") -> str:
    """A figure as text: ``format(value, spec)``, ``-`` for None, ``n/s (est X)`` for an unsupported one."""
    if is_unsupported(value):
        return f"n/s (est {format_figure(value['estimate'], spec)})"
    if value is None:
        return "-"
    if isinstance(value, list):
        return "[" + ", ".join(format(v, spec) for v in value) + "]"
    return value if isinstance(value, str) else format(value, spec)


def format_operational(key: str, block: dict[str, Any]) -> str:
    """One line of an :func:`operational_fairness` block: threshold, per-group FMR/FNMR, and why it is unsupported.

    Args:
        key: the block's key (``"1e-03"``).
        block: ``operational_fairness(...)[key]``.
    """
    rates = ", ".join(
        f"{g} FMR {format_figure(e['fmr'], '.2g')} FNMR {format_figure(e['fnmr'], '.3f')}"
        for g, e in block["groups"].items()
        if e["fmr"] is not None
    )
    threshold = block["threshold"]
    why = f"  (unsupported: {threshold['unsupported']})" if is_unsupported(threshold) else ""
    if not why:
        short = [g for g, e in block["groups"].items() if is_unsupported(e["fmr"])]
        why = f"  (FMR of {', '.join(short)} unsupported: too few impostors, rule of 3)" if short else ""
    return f"FMR {key}: threshold {format_figure(threshold, '.4f')}; {rates}{why}"


def report_lines(validation: dict[str, Any], target: str = "1e-03") -> list[str]:
    """Markdown bullets for a release report: each artifact's operating point at ``target``, marks included.

    Args:
        validation: the validate stage's metrics (``artifacts.<name>.evaluation.operational``, ``order``).
        target: the operational block to show.
    """
    from factory.evaluate.tables import artifact_order

    lines = []
    for name in artifact_order(validation):
        block = validation["artifacts"][name]["evaluation"].get("operational", {}).get(target)
        if block is not None:
            lines.append(f"- {name}: {format_operational(target, block)}")
    return lines


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
    accepted: np.ndarray, issame: np.ndarray, clusters: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """FMR and FNMR of every replicate of a subject-level resampling (pairs weighted by their cluster's draws).

    The four pair tallies are summed per cluster once; each replicate's rates are then two matrix-vector products
    (``R×C`` by ``C``) instead of a ``R×pairs`` weight matrix.
    """
    n_clusters = counts.shape[1]

    def per_cluster(mask: np.ndarray) -> np.ndarray:
        return np.bincount(clusters, weights=mask.astype(np.float64), minlength=n_clusters)

    imp, gen = ~issame, issame
    weights = counts.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        fmr = weights @ per_cluster(imp & accepted) / (weights @ per_cluster(imp))
        fnmr = weights @ per_cluster(gen & ~accepted) / (weights @ per_cluster(gen))
    return fmr, fnmr


def operational_fairness(
    scores: np.ndarray,
    issame: np.ndarray,
    groups: np.ndarray,
    group_names: Sequence[str],
    subjects: np.ndarray,
    targets: Sequence[float] = DEFAULT_TARGETS,
    replicates: int = 1000,
    seed: int = 0,
    resampling: Resampling | None = None,
) -> dict[str, Any]:
    """Per-target global threshold, per-group FMR/FNMR with bootstrap intervals, and the summary measures.

    Args:
        scores: similarity per pair (higher = more alike).
        issame: genuine flag per pair.
        groups: group index per pair (into ``group_names``).
        group_names: group names.
        subjects: subject id per pair (of its first image), for the bootstrap.
        targets: FMR targets; each is reported with ``supported`` telling whether the data can back it.
        replicates: bootstrap replicates (0 skips the intervals), when ``resampling`` is not given.
        seed: bootstrap seed, when ``resampling`` is not given.
        resampling: the subject draws shared with the rest of the evaluation (one per pair, in this order).

    Returns:
        Per target key (``"1e-03"``): ``target_fmr``, ``threshold``, ``fmr``, ``supported``, ``groups`` (per group:
        counts, ``fmr``, ``fnmr``, ``fmr_ci``, ``fnmr_ci``, ``fmr_supported``) and ``summary``; figures the impostor
        count cannot back are marked by :func:`unsupported` (see the module docstring).
    """
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    groups, subjects = np.asarray(groups), np.asarray(subjects)
    if not (len(scores) == len(issame) == len(groups) == len(subjects)):
        raise ValueError("scores, issame, groups and subjects must have one entry per pair")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    impostors = scores[~issame]
    if resampling is None and replicates:
        resampling = resample_subjects(groups, subjects, replicates, seed=seed)
    out: dict[str, Any] = {}
    for target in targets:
        threshold = threshold_at_fmr(impostors, target)
        accepted = scores >= threshold
        # An unsupported target leaves the threshold itself to chance: every rate read at it is unsupported too.
        overall = support_note(len(impostors), target)
        per_group: dict[str, Any] = {}
        rates: dict[str, tuple[float, float]] = {}
        short: list[str] = []
        for g, name in enumerate(group_names):
            mask = groups == g
            gen, imp = issame & mask, ~issame & mask
            fmr = float((imp & accepted).sum() / imp.sum()) if imp.any() else None
            fnmr = float((gen & ~accepted).sum() / gen.sum()) if gen.any() else None
            own = overall or support_note(int(imp.sum()), target, f"group {name!r}")
            if own is not None and overall is None and fmr is not None:
                short.append(name)
            entry: dict[str, Any] = {
                "genuine": int(gen.sum()),
                "impostors": int(imp.sum()),
                "false_matches": int((imp & accepted).sum()),
                "false_non_matches": int((gen & ~accepted).sum()),
                "fmr": unsupported(fmr, own),
                "fnmr": unsupported(fnmr, overall),
                "fmr_supported": supports_target(int(imp.sum()), target),
            }
            if resampling is not None and mask.any():
                fmr_b, fnmr_b = _bootstrap_rates(
                    accepted[mask], issame[mask], resampling.clusters[mask], resampling.counts
                )
                entry["fmr_ci"] = unsupported(interval(fmr_b, resampling.level, fmr), own)
                entry["fnmr_ci"] = unsupported(interval(fnmr_b, resampling.level, fnmr), overall)
            per_group[name] = entry
            if fmr is not None and fnmr is not None:
                rates[name] = (fmr, fnmr)
        summary = None
        if rates:
            summary = summary_measures([r[0] for r in rates.values()], [r[1] for r in rates.values()])
            fmr_note = overall or _groups_note(short, target)
            summary = {k: unsupported(v, overall if k in FNMR_ONLY else fmr_note) for k, v in summary.items()}
        out[f"{target:.0e}"] = {
            "target_fmr": target,
            "threshold": unsupported(threshold, overall),
            "fmr": unsupported(float((impostors >= threshold).mean()), overall),
            "supported": overall is None,
            "groups": per_group,
            "summary": summary,
        }
    return out


def _groups_note(names: Sequence[str], target: float) -> str | None:
    if not names:
        return None
    listed = ("group " if len(names) == 1 else "groups ") + ", ".join(repr(n) for n in names)
    return (
        f"rule of 3: the FMR of {listed} is unsupported at {target:.0e} "
        f"(fewer than {required_impostors(target)} impostor pairs)"
    )


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
        ``{"target", "threshold", "supported", "matrix" (n×n, symmetric, None where a cell has no pairs, marked
        unsupported where it has fewer than ``3 / target``), "pairs"}``.
    """
    everything = np.concatenate([same_group_scores, cross_scores])
    threshold = threshold_at_fmr(everything, target)
    overall = support_note(len(everything), target)
    hits, counts = np.zeros((n_groups, n_groups)), np.zeros((n_groups, n_groups))
    for scores, a, b in (
        (same_group_scores, same_group_cells, same_group_cells),
        (cross_scores, cross_cells[:, 0], cross_cells[:, 1]),
    ):
        np.add.at(hits, (a, b), scores >= threshold)
        np.add.at(counts, (a, b), 1)
    hits, counts = hits + hits.T - np.diag(hits.diagonal()), counts + counts.T - np.diag(counts.diagonal())

    def cell(i: int, j: int) -> Any:
        if not counts[i, j]:
            return None
        why = overall or support_note(int(counts[i, j]), target, f"cell ({min(i, j)}, {max(i, j)})")
        return unsupported(float(hits[i, j] / counts[i, j]), why)

    matrix = [[cell(i, j) for j in range(n_groups)] for i in range(n_groups)]
    return {
        "target": target,
        "threshold": unsupported(threshold, overall),
        "supported": overall is None,
        "matrix": matrix,
        "pairs": counts.astype(int).tolist(),
    }
