"""Benchmarks sized for the question: how many pairs per group resolve a recipe's gates and FMR targets.

A gate in confidence mode passes or fails only when its interval lies on one side of the limit, so a benchmark too
small for the margin between a measurement and its limit leaves the gate "not resolvable". This module estimates,
before a build, the interval each gated number will have at a given number of pairs per group, and so the size that
resolves each gate and what the current size resolves:

- **FMR targets** (:data:`~factory.evaluate.operational.DEFAULT_TARGETS`): rule of three, a group needs at least
  ``3 / target`` impostor pairs; the procedural benchmark is half genuine, half impostor pairs.
- **Mean accuracy** of ``k`` groups of ``n`` pairs: half-width ``z·sqrt(mean_g p_g(1 - p_g) · deff / (n·k))``.
- **STD** (sample std of the group accuracies): Monte Carlo of the sample std of ``k`` normal group accuracies with
  variances ``p_g(1 - p_g) · deff / n``, around the group accuracies shrunk toward their mean by the noise of the
  benchmark that measured them (a measured STD is inflated by that noise).
- **INT8 drift** against its parent on the same pairs: half-width ``z·sqrt(q · deff_d / (n·k))`` for the mean,
  ``z·sqrt(q_g · deff_d / n)`` per group, ``q`` the rate of discordant pairs (one model right, the other wrong).

``deff`` is the design effect of the subject-level bootstrap: a person's pairs are correlated, so the measured
interval is wider than a binomial one, by ``(measured width / binomial width)^2``. Estimates come from the newest
validation of the recipe's run directory when there is one (per-group accuracies of the gated artifacts, the
measured interval widths, the INT8 comparison's discordant pairs), otherwise from :class:`Assumptions`, which the
plan prints. Latency is not sized here: its interval comes from ``validate.latency_repeats``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from factory.evaluate.operational import DEFAULT_TARGETS, supports_target
from factory.files import read_json
from factory.pipeline.build import cached_output, run_dir_for
from factory.pipeline.stage import STAGE_FILE
from factory.recipe import Recipe
from factory.recipe.schema import GateSpec
from factory.runtime.artifacts import Artifact

PAIRS_STEP = 20  # data.benchmark_pairs_per_group: 10 folds, half genuine, half impostor
MAX_PAIRS = 10_000_000  # per group; a gate that needs more has no practical benchmark
STD_DRAWS = 4000  # Monte-Carlo replicates of the sample STD: its upper quantile moves by < 1 % between seeds
SIZED_GATES = (
    "min_accuracy",
    "max_std",
    "max_int8_drop",
    "max_int8_group_drop",
)  # latency's interval comes from validate.latency_repeats


@dataclass(frozen=True)
class Assumptions:
    """What the plan assumes when no earlier validation of the recipe measured it."""

    accuracy: float = 0.90  # mean of the group accuracies (the demo's student is near 0.89)
    std: float = 0.03  # their spread (sample std; the demo's student is near 0.035)
    design_effect: float = 1.5  # bootstrap over subjects vs binomial variance (correlated pairs of one person)
    discordance: float = 0.03  # pairs that an INT8 artifact and its FP32 parent decide differently
    drop: float = 0.0  # INT8 mean accuracy below its parent
    level: float = 0.95
    groups: int = 4  # a real benchmark not measured yet (RFW has 4)

    def describe(self) -> list[str]:
        """The assumptions as the plan prints them."""
        return [
            f"group accuracies around {self.accuracy:.0%} with a spread (STD) of {100 * self.std:.1f} points",
            f"design effect {self.design_effect:g} (a person's pairs are correlated)",
            f"INT8 and its FP32 parent disagree on {self.discordance:.0%} of pairs, drop {100 * self.drop:.1f} points",
        ]


@dataclass(frozen=True)
class Drift:
    """An INT8 artifact against the FP32 artifact it derives from, as measured on the same pairs."""

    against: str
    drop: float  # parent's mean accuracy minus the artifact's
    discordance: tuple[float, ...]  # per group: pairs one of the two gets right and the other wrong, / pairs
    group_drops: tuple[float, ...] = ()  # per group, as ``drop``; empty: every group's is ``drop``

    def drops(self) -> tuple[float, ...]:
        """Each group's drop (the mean drop for every group where they were not measured)."""
        return self.group_drops or (self.drop,) * len(self.discordance)


@dataclass(frozen=True)
class Evidence:
    """The numbers a plan rests on: measured by an earlier validation (``source``) or assumed (``source`` None)."""

    source: str | None
    level: float
    groups: tuple[str, ...]
    accuracy: dict[str, tuple[float, ...]]  # gated artifact -> accuracy of each group, in ``groups`` order
    design_effect: float
    drift: dict[str, Drift]  # INT8 artifact -> its comparison with its parent
    drift_design_effect: float
    measured_pairs: int | None = None  # pairs per group of the benchmark that measured it
    measured_impostors: int | None = None  # impostor pairs per group (the smallest group)
    measured: tuple[str, ...] = ()  # what the source measured, in words
    assumed: tuple[str, ...] = ()  # what had to be assumed anyway, in words


@dataclass(frozen=True)
class TargetPlan:
    """One FMR target: the impostor pairs per group it needs (rule of three) and whether the benchmark has them."""

    target: float
    impostors_needed: int
    pairs_needed: int  # per group, half of them impostors (rounded up to a multiple of 20 for procedural pairs)
    supported: bool | None  # at the current size; None when the size is not known


@dataclass(frozen=True)
class GatePlan:
    """One gate: its hardest artifact, the margin to resolve, what the current size resolves and what would."""

    key: str
    mode: str
    unresolvable: str  # what the gate does when not resolvable: "pass" or "fail" ("decides" for point gates)
    comparison: str
    limit: float
    artifact: str
    estimate: float
    margin: float  # |estimate - limit|
    resolution: float | None  # the smallest margin the current size resolves (interval reach on the limit's side)
    resolved: bool | None  # at the current size
    pairs_needed: int | None  # per group; None: no practical size resolves it (the estimate is at the limit)


@dataclass(frozen=True)
class BenchmarkPlan:
    """What a recipe's benchmark can resolve and what it would need to resolve every gate and FMR target."""

    recipe: str
    procedural: bool
    groups: int
    pairs_per_group: int | None  # None: a real benchmark not measured yet
    level: float
    evidence: Evidence
    targets: list[TargetPlan]
    gates: list[GatePlan]
    drift_resolution: dict[str, float] = field(default_factory=dict)  # "mean" and each group, at the current size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plan."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------------------
# Evidence: an earlier validation, or assumptions
# --------------------------------------------------------------------------------------------------------------


def assumed_evidence(groups: Sequence[str], assumptions: Assumptions = Assumptions()) -> Evidence:
    """Evidence from :class:`Assumptions` alone: group accuracies spread evenly around the assumed mean and STD."""
    k = len(groups)
    spread = np.linspace(-1.0, 1.0, k) if k > 1 else np.zeros(1)
    if k > 1:
        spread = spread / spread.std(ddof=1)  # sample std 1, so the accuracies have exactly the assumed STD
    accuracy = tuple(float(np.clip(assumptions.accuracy + assumptions.std * s, 0.0, 1.0)) for s in spread)
    drift = Drift("parent", assumptions.drop, (assumptions.discordance,) * k)
    return Evidence(
        source=None,
        level=assumptions.level,
        groups=tuple(groups),
        accuracy={"(assumed)": accuracy},
        design_effect=assumptions.design_effect,
        drift={"(assumed)": drift},
        drift_design_effect=1.0,
        assumed=tuple(assumptions.describe()),
    )


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def _width(ci: Any) -> float | None:
    if not isinstance(ci, Sequence) or len(ci) != 2 or not all(isinstance(b, (int, float)) for b in ci):
        return None
    width = float(ci[1]) - float(ci[0])
    return width if math.isfinite(width) and width >= 0 else None


def evidence_from_metrics(
    metrics: dict[str, Any], artifacts: Sequence[Artifact], source: str, assumptions: Assumptions = Assumptions()
) -> Evidence:
    """What an earlier validation measured, reduced to what sizing needs.

    Args:
        metrics: the validate stage's metrics (``metrics.json``).
        artifacts: the build's artifact records (which are references, which INT8 and derived from what); without
            them every artifact but the references the metrics list (the teachers; the first measured in metrics
            older than that list) counts as gated and drift is assumed.
        source: where the metrics came from, for the plan's header.
        assumptions: for what the metrics lack (intervals and comparisons of builds older than them).

    Raises:
        KeyError, TypeError, ValueError: metrics without the validate stage's shape.
    """
    groups = tuple(metrics["groups"])
    order = [n for n in metrics.get("order", ()) if n in metrics["artifacts"]] or list(metrics["artifacts"])
    records = {a.name: a for a in artifacts}
    references = set(metrics.get("references", order[:1]))
    gated = (
        [n for n in order if n in records and not records[n].reference]
        if records
        else [n for n in order if n not in references]
    )
    assumed: list[str] = []
    level, widths, accuracy = None, [], {}
    pairs, impostors = [], []
    for name in gated:
        evaluation = metrics["artifacts"][name]["evaluation"]
        level = level or (evaluation.get("uncertainty") or {}).get("level")
        entries = [evaluation["groups"][g] for g in groups]
        accuracy[name] = tuple(float(e["accuracy_mean"]) for e in entries)
        for e in entries:
            pairs.append(int(e["pairs"]))
            impostors.append(int(e["pairs"]) - int(e["genuine"]))
    level = float(level or assumptions.level)
    z = _z(level)
    for name in gated:
        for g in groups:
            e = metrics["artifacts"][name]["evaluation"]["groups"][g]
            p, n, width = float(e["accuracy_mean"]), int(e["pairs"]), _width(e.get("ci"))
            if width is not None and 0.0 < p < 1.0 and n > 0:
                widths.append((width / (2 * z * math.sqrt(p * (1 - p) / n))) ** 2)
    design_effect = float(np.mean(widths)) if widths else assumptions.design_effect
    if not widths:
        assumed.append(f"design effect {assumptions.design_effect:g} (the metrics hold no accuracy intervals)")
    drift, ratios, unpaired = {}, [], []
    comparisons = metrics.get("comparisons") or {}
    for name in gated:
        record, paired = records.get(name), comparisons.get(name)
        if record is None or record.precision != "int8" or record.derived_from not in metrics["artifacts"]:
            continue
        parent = record.derived_from
        if not paired or paired.get("against") != parent:
            # Measured before paired comparisons existed: the drop is known, the discordance is not.
            means = [metrics["artifacts"][a]["evaluation"]["fairness"]["mean"] for a in (parent, name)]
            drift[name] = Drift(parent, float(means[0] - means[1]), (assumptions.discordance,) * len(groups))
            unpaired.append(name)
            continue
        rates = []
        for g in groups:
            test = paired["groups"][g]["mcnemar"]
            pairs_g = max(int(test["pairs"]), 1)
            q = (test["only_against_correct"] + test["only_artifact_correct"]) / pairs_g
            rates.append(float(q))
            width = _width(paired["groups"][g].get("ci"))
            if width is not None and q > 0:
                ratios.append((width / (2 * z * math.sqrt(q / pairs_g))) ** 2)
        group_drops = tuple(-float(paired["groups"][g]["delta"]) for g in groups)
        drift[name] = Drift(parent, -float(paired["mean"]["delta"]), tuple(rates), group_drops)
    if unpaired:
        assumed.append(
            f"INT8 discordance {assumptions.discordance:.0%} of pairs for {', '.join(unpaired)}, drift design effect 1 "
            "(the metrics hold no paired comparison with its parent)"
        )
    if not records:  # which artifacts are INT8 is not known: size the drift on assumptions
        drift = assumed_evidence(groups, assumptions).drift
        assumed.append(
            f"INT8 discordance {assumptions.discordance:.0%} of pairs, drop {100 * assumptions.drop:.1f} points (the "
            "build's artifact records are gone)"
        )
    if not accuracy:
        raise ValueError(f"{source}: no gated artifact was measured")
    measured = [f"group accuracies of {', '.join(accuracy)} on {min(pairs):,} pairs per group"]
    if widths:
        measured.append(f"design effect {design_effect:.2f} (bootstrap interval widths vs binomial ones)")
    paired_names = [name for name in drift if name not in unpaired]
    if paired_names:
        deff = f", drift design effect {np.mean(ratios):.2f}" if ratios else ""
        measured.append(f"INT8 drop and discordant pairs of {', '.join(paired_names)} vs its parent{deff}")
    if unpaired and records:
        measured.append(f"INT8 drop of {', '.join(unpaired)} vs its parent")
    return Evidence(
        source=source,
        level=level,
        groups=groups,
        accuracy=accuracy,
        design_effect=design_effect,
        drift=drift,
        drift_design_effect=float(np.mean(ratios)) if ratios else 1.0,
        measured_pairs=min(pairs),
        measured_impostors=min(impostors),
        measured=tuple(measured),
        assumed=tuple(assumed),
    )


def previous_validation(recipe: Recipe) -> tuple[Path, dict[str, Any], list[Artifact]] | None:
    """The newest finished validation in the recipe's run directory: its folder, metrics and artifact records.

    The metrics are the stage record's (the same as its ``metrics.json``); the artifact records are read from the
    upstream stages that validation ran on (their keys are in its ``stage.json``); a stage folder that is gone
    leaves its artifacts out.
    """
    stages = run_dir_for(recipe) / "stages"
    finished = [p for p in (stages / "validate").glob(f"*/{STAGE_FILE}") if not p.parent.name.endswith(".partial")]
    if not finished:
        return None
    newest = max(finished, key=lambda p: p.stat().st_mtime).parent
    output = cached_output("validate", newest.name, newest)
    if output is None:
        return None
    artifacts: list[Artifact] = []
    for stage, key in (read_json(newest / STAGE_FILE).get("upstream_keys") or {}).items():
        upstream = cached_output(stage, key, stages / stage / key)
        artifacts += upstream.artifacts if upstream is not None else []
    return newest, output.metrics, artifacts


def read_evidence(recipe: Recipe, groups: Sequence[str], assumptions: Assumptions = Assumptions()) -> Evidence:
    """Evidence from the newest earlier validation of ``recipe``, or from ``assumptions`` when there is none.

    A metrics file that cannot be read as a validation falls back to the assumptions and says so.
    """
    try:
        found = previous_validation(recipe)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return dataclasses.replace(
            assumed_evidence(groups, assumptions),
            assumed=(f"earlier validation unreadable: {e}", *assumptions.describe()),
        )
    if found is None:
        return assumed_evidence(groups, assumptions)
    path, metrics, artifacts = found
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime((path / STAGE_FILE).stat().st_mtime))
    try:
        return evidence_from_metrics(metrics, artifacts, f"{path} ({stamp})", assumptions)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        problem = f"{path} is not a validation this plan can read ({type(e).__name__}: {e})"
        return dataclasses.replace(assumed_evidence(groups, assumptions), assumed=(problem, *assumptions.describe()))


# --------------------------------------------------------------------------------------------------------------
# Sizing
# --------------------------------------------------------------------------------------------------------------


def _round_pairs(n: float, procedural: bool) -> int:
    """Pairs per group, at least 1 (a multiple of 20 for the procedural benchmark)."""
    n = max(1.0, n)
    if procedural:
        return int(math.ceil(n / PAIRS_STEP - 1e-9) * PAIRS_STEP)
    return int(math.ceil(n - 1e-9))


def impostors_needed(target: float) -> int:
    """Rule of three: impostor pairs per group that bound an FMR of ``target`` with no false match seen."""
    return int(math.ceil(3.0 / target - 1e-6))  # 3 / 1e-3 is 2999.9999999999995 in floating point


def _mean_halfwidth(accuracy: Sequence[float], deff: float, z: float, n: int) -> float:
    p = np.asarray(accuracy, np.float64)
    return float(z * math.sqrt(float(np.mean(p * (1 - p))) * deff / (n * len(p))))


def _drift_halfwidth(discordance: Sequence[float], deff: float, z: float, n: int) -> float:
    return float(z * math.sqrt(float(np.mean(discordance)) * deff / (n * len(discordance))))


class _StdModel:
    """The sample STD of ``k`` noisy group accuracies at ``n`` pairs per group, by Monte Carlo (fixed draws).

    The same standard-normal draws serve every ``n``, so its quantiles change smoothly with ``n`` and a search over
    ``n`` is stable.
    """

    def __init__(self, accuracy: Sequence[float], deff: float, level: float, measured_pairs: int | None) -> None:
        p = np.asarray(accuracy, np.float64)
        self.deff, self.level = deff, level
        if measured_pairs and len(p) > 1:
            # A measured STD carries the noise of its benchmark: E[s^2] = true spread^2 + mean noise variance.
            noise = float(np.mean(p * (1 - p))) * deff / measured_pairs
            s2 = float(p.var(ddof=1))
            shrink = math.sqrt(max(0.0, s2 - noise) / s2) if s2 > 0 else 0.0
            p = p.mean() + shrink * (p - p.mean())
        self.truth = p
        self.std = float(p.std(ddof=1)) if len(p) > 1 else math.nan
        self.draws = np.random.default_rng(0).standard_normal((STD_DRAWS, len(p)))

    def quantiles(self, n: int) -> tuple[float, float]:
        """The ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the sample STD at ``n`` pairs per group."""
        sigma = np.sqrt(self.truth * (1 - self.truth) * self.deff / n)
        s = (self.truth + sigma * self.draws).std(axis=1, ddof=1)
        low, high = np.quantile(s, [(1 - self.level) / 2, (1 + self.level) / 2])
        return float(low), float(high)

    def reach(self, n: int, above: bool) -> float:
        """How far the interval reaches from the STD, upward (``above``) or downward, at ``n`` pairs per group."""
        low, high = self.quantiles(n)
        return max(0.0, high - self.std) if above else max(0.0, self.std - low)


def _smallest(reach: Callable[[int], float], margin: float, procedural: bool) -> int | None:
    """The smallest size (a multiple of 20 when procedural) whose interval reaches less far than ``margin``.

    Bisection: ``reach`` shrinks as the benchmark grows. None when even :data:`MAX_PAIRS` does not resolve it.
    """
    step = PAIRS_STEP if procedural else 1
    high = MAX_PAIRS // step
    if margin <= 0 or not reach(high * step) < margin:
        return None
    low = 1
    while low < high:
        mid = (low + high) // 2
        if reach(mid * step) < margin:
            high = mid
        else:
            low = mid + 1
    return low * step


def _candidates(key: str, limit: float, evidence: Evidence) -> list[tuple[str, str, float, Callable[[int], float]]]:
    """``(artifact, comparison, estimate, reach)`` for every artifact gate ``key`` applies to.

    ``reach(n)``: how far the interval reaches from the estimate toward the limit at ``n`` pairs per group.
    """
    z, deff = _z(evidence.level), evidence.design_effect
    out: list[tuple[str, str, float, Callable[[int], float]]] = []
    if key == "min_accuracy":
        for name, accuracy in evidence.accuracy.items():
            out.append((name, ">=", float(np.mean(accuracy)), functools.partial(_mean_halfwidth, accuracy, deff, z)))
    elif key == "max_std" and len(evidence.groups) > 1:
        for name, accuracy in evidence.accuracy.items():
            model = _StdModel(accuracy, deff, evidence.level, evidence.measured_pairs)
            # Below the limit the interval's top decides (a pass must be shown), above it the bottom (a fail).
            out.append((name, "<=", model.std, functools.partial(model.reach, above=model.std < limit)))
    elif key == "max_int8_drop":
        for name, drift in evidence.drift.items():
            reach = functools.partial(_drift_halfwidth, drift.discordance, evidence.drift_design_effect, z)
            out.append((name, "<=", drift.drop, reach))
    elif key == "max_int8_group_drop":
        for name, drift in evidence.drift.items():
            drops = drift.drops()
            reach = functools.partial(
                _worst_group_reach, drops, drift.discordance, evidence.drift_design_effect, z, limit
            )
            out.append((name, "<=", max(drops), reach))
    return out


def _worst_group_reach(
    drops: Sequence[float], discordance: Sequence[float], deff: float, z: float, limit: float, n: int
) -> float:
    """How far the worst-group drop's interval reaches toward ``limit`` at ``n`` pairs per group.

    The gate is shown passing only when every group's paired interval is inside the limit, and shown failing when
    any group's lies beyond it. Below the limit the answer is the group that is hardest to resolve: the reach is
    scaled so that it is under the worst group's margin exactly when every group's half-width is under its own
    margin. Above it, the worst group's own half-width.
    """
    halfwidths = [z * math.sqrt(q * deff / n) for q in discordance]
    worst = max(range(len(drops)), key=lambda g: drops[g])
    if drops[worst] > limit:
        return halfwidths[worst]
    margins = [limit - d for d in drops]
    return max(h - m for h, m in zip(halfwidths, margins, strict=True)) + margins[worst]


def _gate_plan(key: str, spec: GateSpec, evidence: Evidence, n: int | None, procedural: bool) -> GatePlan | None:
    """The gate's row for the artifact that needs the most pairs (None when nothing it gates can be sized)."""
    policy = (spec.unresolvable or "fail") if spec.mode == "confidence" else "decides"
    rows = []
    for artifact, comparison, estimate, reach in _candidates(key, spec.limit, evidence):
        margin = abs(estimate - spec.limit)
        resolution = None if n is None else reach(n)
        resolved = None if resolution is None else resolution < margin
        needed = _smallest(reach, margin, procedural)
        rows.append(
            GatePlan(
                key, spec.mode, policy, comparison, spec.limit, artifact, estimate, margin, resolution, resolved, needed
            )
        )
    # One that no size resolves comes first, then the one needing the most pairs.
    return max(rows, key=lambda r: (r.pairs_needed is None, r.pairs_needed or 0, -r.margin), default=None)


def plan_benchmark(
    recipe: Recipe,
    evidence: Evidence | None = None,
    pairs_per_group: int | None = None,
    assumptions: Assumptions = Assumptions(),
) -> BenchmarkPlan:
    """Size the recipe's benchmark for its gates and the FMR targets.

    Args:
        recipe: a validated recipe.
        evidence: what the estimates rest on; default :func:`read_evidence` (the newest earlier validation).
        pairs_per_group: the size to judge (default: the recipe's procedural size, or a real benchmark's measured
            one).
        assumptions: what is assumed where nothing was measured.
    """
    procedural = recipe.data.benchmark is None
    if evidence is None:
        groups = _world_groups(recipe) if procedural else tuple(f"group{i}" for i in range(assumptions.groups))
        evidence = read_evidence(recipe, groups, assumptions)
        if not procedural and evidence.source is None:
            note = f"{assumptions.groups} groups (as RFW; the benchmark file is only read by a build)"
            evidence = dataclasses.replace(evidence, assumed=(note, *evidence.assumed))
    if pairs_per_group is None:
        pairs_per_group = recipe.data.benchmark_pairs_per_group if procedural else evidence.measured_pairs
    n = pairs_per_group
    if procedural or n is None:
        impostors = None if n is None else n // 2
    else:  # a real benchmark's own split of genuine and impostor pairs
        impostors = evidence.measured_impostors
    targets = [
        TargetPlan(
            target,
            impostors_needed(target),
            _round_pairs(2 * impostors_needed(target), procedural),
            None if impostors is None else supports_target(impostors, target),
        )
        for target in DEFAULT_TARGETS
    ]
    gates = []
    for f in dataclasses.fields(recipe.gates):
        setting = getattr(recipe.gates, f.name)
        if f.name not in SIZED_GATES or setting is None:
            continue
        row = _gate_plan(f.name, GateSpec.of(setting), evidence, n, procedural)
        if row is not None:
            gates.append(row)
    drift: dict[str, float] = {}
    if n is not None and evidence.drift:
        z = _z(evidence.level)
        # The INT8 artifact whose decisions move most decides what the benchmark can resolve.
        worst = max(evidence.drift.values(), key=lambda d: float(np.mean(d.discordance)))
        drift["mean"] = _drift_halfwidth(worst.discordance, evidence.drift_design_effect, z, n)
        for g, q in zip(evidence.groups, worst.discordance, strict=True):
            drift[g] = float(z * math.sqrt(q * evidence.drift_design_effect / n))
    return BenchmarkPlan(
        recipe=recipe.name,
        procedural=procedural,
        groups=len(evidence.groups),
        pairs_per_group=n,
        level=evidence.level,
        evidence=evidence,
        targets=targets,
        gates=gates,
        drift_resolution=drift,
    )


def _world_groups(recipe: Recipe) -> tuple[str, ...]:
    from factory.data.world.taxonomy import load_taxonomy

    return tuple(g.name for g in load_taxonomy(recipe.data.world.taxonomy))


# --------------------------------------------------------------------------------------------------------------
# Warnings and the printed plan
# --------------------------------------------------------------------------------------------------------------


def _size_key(plan: BenchmarkPlan) -> str:
    return "data.benchmark_pairs_per_group" if plan.procedural else "pairs per group in data.benchmark"


def plan_warnings(plan: BenchmarkPlan) -> list[str]:
    """What the planned benchmark cannot back, one message per problem (without the ``warning:`` prefix).

    FMR targets its impostor pairs cannot support (rule of three), and confidence-mode gates whose estimated
    interval still holds the limit at the planned size. Gates are judged on measured estimates only: with nothing
    measured yet, whether a gate resolves is a guess, left to ``factory data plan``.
    """
    out = []
    n = plan.pairs_per_group
    for t in plan.targets:
        if t.supported is False:
            impostors = n // 2 if plan.procedural and n is not None else plan.evidence.measured_impostors
            out.append(
                f"FMR {t.target:.0e} is not supported by {impostors:,} impostor pairs per group (rule of 3: needs "
                f"{t.impostors_needed:,}, {_size_key(plan)} >= {t.pairs_needed:,}); its figures are marked unsupported"
            )
    if plan.evidence.source is None:
        return out
    for g in plan.gates:
        if g.mode != "confidence" or g.resolved is not False:
            continue
        fix = (
            f"about {g.pairs_needed:,} pairs per group resolve it"
            if g.pairs_needed is not None
            else "no benchmark size resolves it (the estimate is at the limit)"
        )
        out.append(
            f"gates.{g.key} may not be resolvable at {n:,} pairs per group: {g.artifact} at "
            f"{100 * g.estimate:.2f}% is {100 * g.margin:.2f} points from the limit, its interval reaches about "
            f"{100 * (g.resolution or 0):.2f}; {fix} (factory data plan); unresolved it will {g.unresolvable}"
        )
    return out


def recipe_warnings(recipe: Recipe) -> list[str]:
    """:func:`plan_warnings` of the recipe's plan, estimates from its newest earlier validation if any."""
    return plan_warnings(plan_benchmark(recipe))


def _table(head: list[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
    """Fixed-width lines; columns in ``numeric`` are right-aligned."""
    widths = [max(len(c) for c in column) for column in zip(head, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            f"{c:>{w}}" if i in numeric else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(head), "-" * len(line(head)), *(line(r) for r in rows)]


def format_plan(plan: BenchmarkPlan, path: str | None = None) -> str:
    """The plan as readable text: sizes for the FMR targets and for each gate, what the current size resolves."""
    n = plan.pairs_per_group
    size = "size unknown (a real benchmark not validated yet)" if n is None else f"{n:,} pairs per group"
    evidence = plan.evidence
    lines = [f"benchmark plan for {path or plan.recipe}: {plan.groups} groups, {size}, {plan.level:.0%} intervals"]
    if evidence.source:
        lines.append(f"estimates from {evidence.source}")
        lines += [f"  measured: {m}" for m in evidence.measured]
    else:
        lines.append("estimates from assumptions (no earlier validation of this recipe to measure them on):")
    lines += [f"  assumed: {a}" for a in evidence.assumed]
    current = "now" if n is None else f"at {n:,}"
    targets = [
        [
            f"{t.target:.0e}",
            f"{t.impostors_needed:,}",
            f"{t.pairs_needed:,}",
            "?" if t.supported is None else ("supported" if t.supported else "unsupported"),
        ]
        for t in plan.targets
    ]
    lines += ["", *_table(["FMR target", "impostors/group", "pairs/group", current], targets, {1, 2})]
    lines.append("rule of 3: a group needs 3/FMR impostor pairs; half of the procedural pairs are impostors")
    rows = [
        [
            f"gates.{g.key}",
            g.mode,
            "-" if g.mode == "point" else g.unresolvable,
            g.artifact,
            f"{100 * g.estimate:.2f}%",
            f"{g.comparison} {100 * g.limit:.2f}%",
            f"{100 * g.margin:.2f}",
            "?" if g.resolution is None else f"{100 * g.resolution:.2f}",
            "?" if g.resolved is None else ("resolved" if g.resolved else "NOT resolved"),
            "never" if g.pairs_needed is None else f"{g.pairs_needed:,}",
        ]
        for g in plan.gates
    ]
    if rows:
        head = ["gate", "mode", "unresolved", "hardest artifact", "estimate", "limit", "margin", "CI reach", current]
        lines += ["", *_table([*head, "pairs/group"], rows, {4, 5, 6, 7, 9})]
        lines.append(
            "margin and CI reach in points; a gate resolves when its interval reaches less far than the margin (a "
            "point gate then decides outside the noise); the STD estimate is the measured one less the benchmark's "
            "noise"
        )
    if plan.drift_resolution:
        per_group = ", ".join(f"{g} {100 * v:.2f}" for g, v in plan.drift_resolution.items() if g != "mean")
        lines += [
            "",
            f"{n:,} pairs per group resolve an INT8 drift of {100 * plan.drift_resolution['mean']:.2f} points in the "
            f"mean accuracy, per group: {per_group}",
        ]
    lines.append("latency gates are not sized here: their interval comes from validate.latency_repeats")
    return "\n".join(lines)
