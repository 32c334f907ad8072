"""Release gates: every goal of the recipe checked against the measurements, as one table.

A gate is a goal in the vocabulary of Microsoft Olive (:class:`~factory.recipe.schema.GoalSpec`): a metric from
:data:`METRICS`, the artifacts it is read on (selected from their records: shipped, precision, name; a reference is
never gated), where it was measured (the validate stage on the build machine, or a deploy target's report) and one
goal: a ``threshold`` on the value, or a ``max_degradation`` / ``percent_max_degradation`` from the artifact it is
compared with (its parent, or a named one). The recipe's named gates (``gates.max_std``, ...) are shorthands for
goals (:data:`SHORTHANDS`). A new artifact kind is gated without any edit here, because goals read the records.

A gate is checked in one of two modes (:class:`~factory.recipe.schema.GateSpec`; a bare number in the recipe is a
point gate):

- ``point``: the point estimate against the limit. The interval is still shown, and a row whose interval straddles
  the limit is marked: its outcome is within the benchmark's noise.
- ``confidence``: the interval decides. For a ``<=`` gate it passes when the upper bound is at most the limit and
  fails when the lower bound is above it (for ``>=`` the other way round); an interval that holds the limit is "not
  resolvable", and the gate's ``unresolvable`` setting decides (default ``fail``: a gate never passes on noise).
  A degradation uses the paired comparison with its parent where there is one (same pairs, same bootstrap draws),
  so an INT8 drop fails only when it is shown to be real and larger than the limit; elsewhere it is bounded by both
  sides' own intervals. A confidence gate whose interval was not measured fails.

A figure the benchmark cannot support (an FMR target with too few impostor pairs) is "not resolvable" in either
mode, and a gate that cannot be measured, or a goal that selects nothing, fails: no gate passes by being skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from factory.compress.layer_drift import format_layers
from factory.evaluate.operational import estimate, is_unsupported, unsupported
from factory.evaluate.tables import artifact_order
from factory.recipe import GatesConfig
from factory.recipe.schema import GateSpec, GoalSpec
from factory.registry import Registry
from factory.runtime.artifacts import Artifact

PASS, FAIL, UNRESOLVED = "pass", "fail", "not resolvable"
CHECK = "check"  # the mode of a yes/no row (a target's engine built, its report accepted): no number, no interval
Interval = tuple[float, float]


@dataclass(frozen=True)
class GateResult:
    """One row of the gate table: an artifact, a metric, its value and interval, the limit and the outcome.

    ``outcome`` is ``pass``, ``fail`` or ``not resolvable`` (confidence mode, an interval holding the limit);
    ``passed`` is whether the row lets the release through (a not-resolvable row passes only when the recipe says
    so). ``straddles``: the interval holds the limit, so a point-mode outcome is within noise. Rows read back from
    older records (without the interval fields) get the defaults.
    """

    artifact: str
    gate: str
    value: float
    limit: float
    comparison: str  # ">=" or "<="
    passed: bool
    key: str = ""  # the recipe key, e.g. "max_std"
    mode: str = "point"
    interval: list[float] | None = None  # [low, high] at ``level``
    level: float | None = None
    outcome: str = ""
    straddles: bool = False
    detail: str = ""  # what the failure points at (the layers an INT8 model moved most)
    target: str = ""  # the deploy target it was measured on; "" for the build machine's validate stage
    unit: str = ""  # fraction (shown in %), percent, ratio, ms, MB, cosine; "" in older records: read from the label

    def __post_init__(self) -> None:
        if not self.outcome:  # a record written before outcomes existed: pass or fail was all there was
            object.__setattr__(self, "outcome", PASS if self.passed else FAIL)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row (``GateResult(**row)`` reads it back)."""
        return asdict(self)


@dataclass(frozen=True)
class Metric:
    """What a goal can gate: how to read it from an artifact's measurements, which way is better, its unit.

    ``value`` and ``interval`` read the artifact's entry: its validation entry from the validate stage with the
    record's ``parity`` (the compress stage's drift from its parent), ``paired`` (the paired comparison with its
    parent) and ``size_mb`` added. ``on_target`` reads a deploy target's summary of the artifact instead (None:
    not measured on targets). ``paired_drop`` gives the degradation and its interval from the paired comparison
    (same pairs, same bootstrap draws) for the metrics that have one.
    """

    label: str
    higher_is_better: bool
    unit: str  # fraction (shown in %), ratio, ms, MB or cosine
    value: Callable[[dict[str, Any], GoalSpec], Any]
    interval: Callable[[dict[str, Any], GoalSpec], Any] | None = None  # None: measured without one
    on_target: Callable[[dict[str, Any]], tuple[Any, Any]] | None = None  # (value, interval) there
    paired_drop: Callable[[dict[str, Any] | None], tuple[float | None, Any]] | None = None
    detail: Callable[[dict[str, Any]], str] = lambda e: ""  # what a failure points at


METRICS: Registry[Metric] = Registry("metric")


def _fairness(name: str) -> Callable[[dict[str, Any], GoalSpec], Any]:
    return lambda e, g: e["evaluation"]["fairness"].get(name)


def _fairness_ci(name: str) -> Callable[[dict[str, Any], GoalSpec], Any]:
    return lambda e, g: (e["evaluation"]["fairness"].get("ci") or {}).get(name)


def _paired(name: str) -> Callable[[dict[str, Any] | None], tuple[float | None, Any]]:
    """The drop of ``name`` (mean or std) from the paired comparison: its delta is artifact minus parent."""

    def drop(paired: dict[str, Any] | None) -> tuple[float | None, Any]:
        block = (paired or {}).get(name) or {}
        ci = _bounds(block.get("ci"))
        sign = -1.0 if name == "mean" else 1.0  # a lower mean is worse, a higher std is worse
        delta = block.get("delta")
        value = None if delta is None else sign * float(delta)
        return value, None if ci is None else sorted([sign * ci[0], sign * ci[1]])

    return drop


def _group_drops(paired: dict[str, Any] | None) -> list[tuple[float, Interval | None]]:
    """Each group's drop (parent minus artifact) with its paired interval, from the comparison with the parent."""
    drops = []
    for stats in ((paired or {}).get("groups") or {}).values():
        ci = _bounds(stats.get("ci"))
        drops.append((-float(stats["delta"]), None if ci is None else (-ci[1], -ci[0])))
    return drops


def _worst_group_drop(paired: dict[str, Any] | None) -> tuple[float | None, Any]:
    # The largest drop is shown inside a <= limit only when every group's upper bound is, and shown above it when
    # any group's lower bound is: so its interval runs from the largest lower bound to the largest upper bound.
    drops = _group_drops(paired)
    value = max((drop for drop, _ in drops), default=None)
    if not drops or any(ci is None for _, ci in drops):
        return value, None
    return value, [max(ci[0] for _, ci in drops), max(ci[1] for _, ci in drops)]


def _extreme(
    values: list[float], intervals: list[Interval | None], worst: Callable[..., float]
) -> tuple[float | None, Any]:
    """The worst of several groups' values, with the interval that decides a gate on all of them at once.

    ``worst`` is ``min`` (higher is better) or ``max``: the worst group is shown on the good side of a limit only
    when every group is, and on the bad side when any group is, so the bounds are the worst of the lower bounds
    and the worst of the upper bounds.
    """
    if not values:
        return None, None
    if any(ci is None for ci in intervals) or len(intervals) != len(values):
        return worst(values), None
    return worst(values), [worst(ci[0] for ci in intervals), worst(ci[1] for ci in intervals)]


def _group_accuracy(e: dict[str, Any]) -> tuple[float | None, Any]:
    groups = e["evaluation"].get("groups") or {}
    return _extreme(
        [float(s["accuracy_mean"]) for s in groups.values()], [_bounds(s.get("ci")) for s in groups.values()], min
    )


def _operating(e: dict[str, Any], g: GoalSpec) -> dict[str, Any]:
    """The validate stage's block for the goal's FMR target (``"1e-03"``); empty when not measured."""
    return (e["evaluation"].get("operational") or {}).get(f"{g.at_fmr:.0e}") or {}


def _group_rate(rate: str) -> Callable[[dict[str, Any], GoalSpec], Any]:
    """The highest group FMR or FNMR at the goal's operating point (an unsupported one stays marked)."""

    def read(e: dict[str, Any], g: GoalSpec, want_interval: bool = False) -> Any:
        groups = _operating(e, g).get("groups") or {}
        reasons = [s[rate]["unsupported"] for s in groups.values() if is_unsupported(s.get(rate))]
        values = [estimate(s.get(rate)) for s in groups.values()]
        if not values or any(v is None for v in values):
            return None
        intervals = [_bounds(estimate(s.get(f"{rate}_ci"))) for s in groups.values()]
        value, interval = _extreme([float(v) for v in values], intervals, max)
        if want_interval:
            return interval
        return unsupported(value, reasons[0] if reasons else None)

    return read


def _summary(name: str) -> Callable[[dict[str, Any], GoalSpec], Any]:
    return lambda e, g: (_operating(e, g).get("summary") or {}).get(name)


def _tar(e: dict[str, Any], g: GoalSpec) -> Any:
    return (((e["evaluation"].get("overall") or {}).get("tar_at_far") or {}).get(f"{g.at_fmr:.0e}") or {}).get("tar")


def _parity(key: str) -> Callable[[dict[str, Any], GoalSpec], Any]:
    # The compress stage's drift from the parent on held-out faces, kept in the artifact's record.
    return lambda e, g: (e.get("parity") or {}).get(key)


def _lowest_group_cosine(e: dict[str, Any], g: GoalSpec) -> Any:
    groups = (e.get("parity") or {}).get("groups") or {}
    return min((float(s["mean_cosine"]) for s in groups.values()), default=None)


def _layers_moved(entry: dict[str, Any]) -> str:
    rows = (entry.get("parity") or {}).get("layers_moved_most") or []
    if not rows:
        return ""
    return f"layers the quantization moved most (cosine to FP32, from their inputs'): {format_layers(rows)}"


def _target_latency(t: dict[str, Any]) -> tuple[Any, Any]:
    latency = (t.get("latency_by_batch") or {}).get("1") or {}
    return latency.get("median_ms"), latency.get("median_ci")


def _target_worst_group(t: dict[str, Any]) -> tuple[Any, Any]:
    return min((t.get("accuracy") or {}).values(), default=None), None


METRICS.register("accuracy")(
    Metric(
        "mean accuracy",
        True,
        "fraction",
        _fairness("mean"),
        _fairness_ci("mean"),
        on_target=lambda t: (t.get("accuracy_mean"), None),
        paired_drop=_paired("mean"),
    )
)
METRICS.register("group_accuracy")(
    Metric(
        "worst group accuracy",
        True,
        "fraction",
        lambda e, g: _group_accuracy(e)[0],
        lambda e, g: _group_accuracy(e)[1],
        on_target=_target_worst_group,
        paired_drop=_worst_group_drop,
    )
)
METRICS.register("tar_at_far")(Metric("TAR@FAR", True, "fraction", _tar))
METRICS.register("std")(
    Metric("accuracy STD", False, "fraction", _fairness("std"), _fairness_ci("std"), paired_drop=_paired("std"))
)
METRICS.register("ser")(Metric("SER", False, "ratio", _fairness("ser"), _fairness_ci("ser")))
for _rate in ("fmr", "fnmr"):
    _read = _group_rate(_rate)
    METRICS.register(f"{_rate}_max")(
        Metric(f"max group {_rate.upper()}", False, "fraction", _read, functools.partial(_read, want_interval=True))
    )
    METRICS.register(f"{_rate}_max_geomean")(
        Metric(f"{_rate.upper()} max/geomean", False, "ratio", _summary(f"{_rate}_max_geomean"))
    )
METRICS.register("cosine")(
    Metric("cosine to parent (mean)", True, "cosine", _parity("mean_cosine"), detail=_layers_moved)
)
METRICS.register("cosine_p1")(
    Metric("cosine to parent (1st pct)", True, "cosine", _parity("p1_cosine"), detail=_layers_moved)
)
METRICS.register("group_cosine")(
    Metric("lowest group cosine to parent", True, "cosine", _lowest_group_cosine, detail=_layers_moved)
)
METRICS.register("latency_ms")(
    Metric(
        "latency ms (b1)",
        False,
        "ms",
        lambda e, g: (e.get("latency") or {}).get("median_ms"),
        lambda e, g: (e.get("latency") or {}).get("median_ci"),
        on_target=_target_latency,
    )
)
METRICS.register("size_mb")(Metric("size MB", False, "MB", lambda e, g: e.get("size_mb")))


# The named gates of the recipe (gates.min_accuracy, ...): shorthands for goals, with the labels reports show.
SHORTHANDS: dict[str, tuple[str, str, str, str]] = {
    # key: (metric, artifacts, goal, label)
    "min_accuracy": ("accuracy", "all", "threshold", "mean accuracy"),
    "max_std": ("std", "all", "threshold", "accuracy STD"),
    "max_int8_drop": ("accuracy", "int8", "max_degradation", "INT8 drop vs FP32"),
    "max_int8_group_drop": ("group_accuracy", "int8", "max_degradation", "INT8 worst group drop"),
    "min_int8_cosine": ("cosine", "int8", "threshold", "INT8 cosine to FP32 (mean)"),
    "min_int8_p1_cosine": ("cosine_p1", "int8", "threshold", "INT8 cosine to FP32 (1st pct)"),
    "max_latency_ms": ("latency_ms", "shipped", "threshold", "latency ms (b1)"),
}


@dataclass(frozen=True)
class ConfiguredGoal:
    """A goal as the gates check it: the recipe key it came from, its label and spec."""

    key: str  # "max_std" or "goals.3"
    label: str
    spec: GoalSpec

    @property
    def metric(self) -> Metric:
        """The metric it reads."""
        return METRICS.get(self.spec.metric)

    @property
    def pairwise(self) -> bool:
        """Whether it compares an artifact with another one (a degradation)."""
        return self.spec.goal != "threshold"

    @property
    def comparison(self) -> str:
        """``>=`` for a threshold on a higher-is-better metric; ``<=`` for the rest (a degradation included)."""
        return ">=" if self.metric.higher_is_better and not self.pairwise else "<="

    @property
    def unit(self) -> str:
        """What the value is in: the metric's unit, or percent for a percent degradation."""
        return "percent" if self.spec.goal == "percent_max_degradation" else self.metric.unit

    @property
    def gate_spec(self) -> GateSpec:
        """Mode and unresolvable as :func:`decide` reads them; a goal without a mode gets its metric's default."""
        mode = self.spec.mode or ("confidence" if self._has_interval() else "point")
        return GateSpec(self.spec.limit, mode, self.spec.unresolvable)

    def _has_interval(self) -> bool:
        if self.spec.target is not None:  # a target's report times with an interval; its accuracies are counts
            return self.spec.metric == "latency_ms"
        # a degradation: from the paired comparison, or bounds from both sides' own intervals
        return self.metric.interval is not None or (self.pairwise and self.metric.paired_drop is not None)

    def applies(self, artifact: Artifact) -> bool:
        """Whether the goal reads this artifact: by its selector (a reference artifact is never gated)."""
        which = self.spec.artifacts
        if which == "all":
            return True
        if which == "shipped":
            return artifact.shipped
        if which in PRECISIONS:
            return artifact.precision == which
        return artifact.name == which


PRECISIONS = ("int8", "fp16", "fp32")


def configured_goals(gates: GatesConfig) -> list[ConfiguredGoal]:
    """Every gate the recipe sets, as goals: the named ones in schema order, then ``goals`` in the recipe's order."""
    out = []
    for f in dataclasses.fields(gates):
        setting = getattr(gates, f.name)
        if f.name not in SHORTHANDS or setting is None:
            continue
        metric, which, goal, label = SHORTHANDS[f.name]
        spec = GateSpec.of(setting)
        goal_spec = GoalSpec(metric, artifacts=which, mode=spec.mode, unresolvable=spec.unresolvable)
        out.append(ConfiguredGoal(f.name, label, dataclasses.replace(goal_spec, **{goal: spec.limit})))
    for i, spec in enumerate(gates.goals):
        out.append(ConfiguredGoal(f"goals.{i}", _goal_label(spec), spec))
    return out


def _goal_label(spec: GoalSpec) -> str:
    metric = METRICS.get(spec.metric)
    label = metric.label
    if spec.metric in ("tar_at_far", "fmr_max", "fnmr_max", "fmr_max_geomean", "fnmr_max_geomean"):
        label += f" (threshold for FMR {spec.at_fmr:.0e})"
    if spec.goal == "threshold":
        return label
    against = "parent" if spec.against == "parent" else spec.against
    return f"{label}: {'% ' if spec.goal == 'percent_max_degradation' else ''}degradation vs {against}"


def _bounds(ci: Any) -> Interval | None:
    """``[low, high]`` from the metrics as floats (``"inf"`` is infinite); None when absent or not two numbers."""
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return None
    try:
        low, high = (float(b) for b in ci)  # float("inf") reads the JSON-safe "inf"
    except (TypeError, ValueError):
        return None
    return None if math.isnan(low) or math.isnan(high) else (low, high)


def decide(
    value: float, interval: Interval | None, limit: float, comparison: str, spec: GateSpec
) -> tuple[str, bool, bool]:
    """The outcome of one gate: ``(outcome, passed, straddles)``.

    Inclusive like the point check: a ``<=`` gate is resolved as passing when the interval's upper bound equals the
    limit, and as failing only when its lower bound is above it.
    """
    at_least = comparison == ">="
    inside = value >= limit if at_least else value <= limit
    shown_inside = shown_outside = False
    if interval is not None:
        low, high = interval
        shown_inside = low >= limit if at_least else high <= limit
        shown_outside = high < limit if at_least else low > limit
    straddles = interval is not None and not (shown_inside or shown_outside)
    if spec.mode == "point":
        return (PASS if inside else FAIL), bool(inside), straddles
    if interval is None:  # nothing to be confident about: a gate that cannot be checked fails
        return FAIL, False, False
    if shown_inside:
        return PASS, True, False
    if shown_outside:
        return FAIL, False, False
    return UNRESOLVED, spec.unresolvable == "pass", True


@dataclass(frozen=True)
class _Reading:
    """A goal's value on one artifact, its interval, and why it cannot be checked (``missing``) or trusted."""

    value: float | None
    interval: Interval | None = None
    missing: str = ""  # not measurable: the row fails, saying this
    untrusted: str = ""  # measured where the data cannot support it (rule of three): not resolvable


def _read(raw: Any, interval: Any = None) -> _Reading:
    """A measured figure, which may be marked unsupported or be a word ("not estimable")."""
    why = raw["unsupported"] if is_unsupported(raw) else ""
    value = estimate(raw)
    if value is None or isinstance(value, str):
        return _Reading(None, missing=f"{value}" if isinstance(value, str) else "not measured")
    value = float(value)
    if math.isnan(value):
        return _Reading(None, missing="not measurable on this benchmark")
    return _Reading(value, _bounds(estimate(interval)), untrusted=why)


def _worse(goal: ConfiguredGoal, artifact: float, reference: float) -> float:
    """How much worse ``artifact`` is than ``reference`` (positive: worse), in the metric's direction."""
    return reference - artifact if goal.metric.higher_is_better else artifact - reference


def _unpaired(goal: ConfiguredGoal, a: _Reading, p: _Reading) -> Interval | None:
    """Bounds of the degradation from both sides' own intervals: where each holds, the difference lies inside.

    Used for metrics without a paired comparison (latency, FMR, ...); with two 95 % intervals the pair of them holds
    with at least 90 % (Bonferroni), so these bounds are wide rather than tight.
    """
    if a.interval is None or p.interval is None:
        return None
    ends = [_worse(goal, x, y) for x in a.interval for y in p.interval]
    return min(ends), max(ends)


def _degradation(
    goal: ConfiguredGoal, a: _Reading, p: _Reading, paired: dict[str, Any] | None, group_drop: float | None
) -> _Reading:
    """The artifact's degradation from the one it is compared with, and its interval (paired where there is one).

    A paired comparison (same pairs, same bootstrap draws) gives both where the metric has one; otherwise the two
    readings' difference, with bounds from both intervals.
    """
    value: float | None = None
    interval: Interval | None = None
    if goal.metric.paired_drop is not None and goal.spec.target is None:
        value, found = goal.metric.paired_drop(paired)
        interval = _bounds(found)
    if value is None:
        if a.value is None or p.value is None:
            return _Reading(None, missing=a.missing or f"the compared artifact: {p.missing}")
        value = _worse(goal, a.value, p.value) if group_drop is None else group_drop
        if goal.metric.paired_drop is None or goal.spec.target is not None:
            interval = _unpaired(goal, a, p)
    if goal.spec.goal == "percent_max_degradation":
        if not p.value:
            return _Reading(None, missing="the compared artifact's value is 0 or not measured: no percentage of it")
        scale = 100.0 / abs(p.value)
        value *= scale
        interval = None if interval is None else (interval[0] * scale, interval[1] * scale)
    return _Reading(value, interval, untrusted=a.untrusted or p.untrusted)


def _group_point_drop(goal: ConfiguredGoal, entry: dict[str, Any], reference: dict[str, Any]) -> float | None:
    """The largest drop of any one group between two validation entries (group_accuracy's degradation)."""
    if goal.spec.metric != "group_accuracy" or goal.spec.target is not None:
        return None
    mine, theirs = entry["evaluation"].get("groups") or {}, reference["evaluation"].get("groups") or {}
    drops = [float(theirs[g]["accuracy_mean"]) - float(s["accuracy_mean"]) for g, s in mine.items() if g in theirs]
    return max(drops, default=None)


class _Measurements:
    """Where goals read their values: the validate stage's metrics, the records, the targets' summaries, sizes."""

    def __init__(
        self,
        metrics: dict[str, Any],
        records: dict[str, Artifact],
        targets: dict[str, Any] | None,
        sizes: dict[str, int] | None,
    ) -> None:
        self.metrics, self.records, self.targets, self.sizes = metrics, records, targets, sizes or {}

    def entry(self, name: str) -> dict[str, Any] | None:
        """The artifact's validation entry with its record's drift, its paired comparison and its size."""
        measured = self.metrics["artifacts"].get(name)
        if measured is None:
            return None
        record = self.records.get(name)
        size = self.sizes.get(name)
        return {
            **measured,
            "parity": record.parity if record else None,
            "size_mb": None if size is None else size / 1e6,
        }

    def on_target(self, target: str, name: str) -> dict[str, Any] | None:
        """What ``target`` measured of the artifact (None when that target did not run it)."""
        found = ((self.targets or {}).get(target) or {}).get("artifacts") or {}
        summary = found.get(name)
        return None if summary is None or "error" in summary else summary

    def reading(self, goal: ConfiguredGoal, name: str) -> _Reading:
        """The goal's metric on one artifact, as a value with its interval (no comparison)."""
        if goal.spec.target is not None:
            summary = self.on_target(goal.spec.target, name)
            if summary is None or goal.metric.on_target is None:
                return _Reading(None, missing=f"not measured on {goal.spec.target}")
            value, interval = goal.metric.on_target(summary)
            return _read(value, interval)
        entry = self.entry(name)
        if entry is None:
            return _Reading(None, missing="not measured by the validate stage")
        interval = None if goal.metric.interval is None else goal.metric.interval(entry, goal.spec)
        return _read(goal.metric.value(entry, goal.spec), interval)


def _against(goal: ConfiguredGoal, record: Artifact) -> str | None:
    return record.derived_from if goal.spec.against == "parent" else goal.spec.against


def _check_goal(goal: ConfiguredGoal, name: str, data: _Measurements) -> GateResult:
    """One row: the goal on one artifact (on the build machine or its target)."""
    record, mine = data.records[name], data.entry(name)
    target = goal.spec.target or ""
    reading = data.reading(goal, name)
    level = _level((mine or {}).get("evaluation", {}).get("uncertainty"))
    if goal.pairwise:
        against = _against(goal, record)
        if against is None or (against not in data.metrics["artifacts"] and not target):
            why = "it derives from no measured artifact" if against is None else f"{against} was not measured"
            return _row(goal, name, _Reading(None, missing=why), target)
        paired = (data.metrics.get("comparisons") or {}).get(name)
        # Only a comparison with the artifact the goal compares against is the degradation's interval.
        paired = paired if paired and paired.get("against") == against else None
        theirs = data.entry(against)
        group_drop = None if target or mine is None or theirs is None else _group_point_drop(goal, mine, theirs)
        reading = _degradation(goal, reading, data.reading(goal, against), paired, group_drop)
        if paired is not None and goal.metric.paired_drop is not None and not target:
            level = _level(paired) or level
    detail = goal.metric.detail(mine or {}) if not target else ""
    return _row(goal, name, reading, target, level, detail)


def _row(
    goal: ConfiguredGoal,
    artifact: str,
    reading: _Reading,
    target: str = "",
    level: float | None = None,
    detail: str = "",
) -> GateResult:
    spec, comparison = goal.gate_spec, goal.comparison
    if reading.value is None:  # not measurable (the STD of a one-group benchmark): a gate that cannot be checked fails
        return GateResult(
            artifact,
            goal.label + " (n/a)",
            math.nan,
            float(spec.limit),
            comparison,
            False,
            goal.key,
            spec.mode,
            target=target,
            unit=goal.unit,
            detail=reading.missing,
        )
    outcome, passed, straddles = decide(reading.value, reading.interval, spec.limit, comparison, spec)
    if reading.untrusted:  # an estimate the data cannot support decides nothing, in either mode
        outcome, passed = UNRESOLVED, spec.unresolvable == "pass"
    interval = reading.interval
    return GateResult(
        artifact,
        goal.label,
        float(reading.value),
        float(spec.limit),
        comparison,
        passed,
        goal.key,
        spec.mode,
        None if interval is None else [float(interval[0]), float(interval[1])],
        level,
        outcome,
        straddles,
        reading.untrusted if reading.untrusted else ("" if passed else detail),
        target,
        goal.unit,
    )


def _level(*blocks: dict[str, Any] | None) -> float | None:
    for block in blocks:
        if block and block.get("level") is not None:
            return float(block["level"])
    return None


def evaluate_gates(
    gates: GatesConfig,
    metrics: dict[str, Any],
    artifacts: list[Artifact],
    targets: dict[str, Any] | None = None,
    sizes: dict[str, int] | None = None,
) -> list[GateResult]:
    """Check every configured gate on every artifact it applies to (reference artifacts are never gated).

    Args:
        gates: the recipe's gates (named shorthands and ``goals``).
        metrics: the validate stage's metrics.
        artifacts: the build's artifact records.
        targets: the deploy stage's per-target results (``metrics["targets"]``), for goals with a ``target``.
        sizes: bytes of each artifact's files, for ``size_mb``.

    Returns:
        Rows per artifact in build order, gates in the recipe's order; degradations (against another artifact) come
        last. A goal that selects nothing it could read (an artifact name never built, a target that runs none of
        the selected artifacts) is a failing row: a gate is never silently skipped.
    """
    records = {a.name: a for a in artifacts}
    names = [n for n in artifact_order(metrics) if n in records and not records[n].reference]
    data = _Measurements(metrics, records, targets, sizes)
    goals = configured_goals(gates)
    rows: list[GateResult] = []
    selected: dict[str, int] = {goal.key: 0 for goal in goals}
    for pairwise in (False, True):
        for name in names:
            for goal in goals:
                if goal.pairwise != pairwise or not goal.applies(records[name]):
                    continue
                if goal.spec.target is not None and data.on_target(goal.spec.target, name) is None:
                    continue  # a target runs the artifacts of its own runtime only
                rows.append(_check_goal(goal, name, data))
                selected[goal.key] += 1
    for goal in goals:
        if selected[goal.key] or goal.key in SHORTHANDS:
            continue  # the named gates apply to whatever the build made of their kind, which may be nothing
        which = goal.spec.artifacts
        if goal.spec.target is not None and goal.spec.target not in (targets or {}):
            listed = ", ".join(targets or {}) or "none"
            why = f"target {goal.spec.target} was not measured (deploy.targets lists {listed})"
        elif goal.spec.target is not None:
            why = f"target {goal.spec.target} ran none of the artifacts selected by {which!r}"
        else:
            why = f"no built artifact is selected by {which!r} (built: {', '.join(names)})"
        rows.append(_row(goal, which, _Reading(None, missing=why), goal.spec.target or ""))
    return rows


def _unit(r: GateResult) -> str:
    if r.unit:
        return r.unit
    # a row recorded before units were: its label says
    return "ms" if "ms" in r.gate else "cosine" if "cosine" in r.gate else "fraction"


def _number(r: GateResult, x: float) -> str:
    """A figure of the row in its unit: a fraction in percent, a cosine to 4 places, anything else to 2."""
    unit = _unit(r)
    if unit == "fraction":
        return f"{100 * x:.2f}%"
    if unit == "percent":
        return f"{x:.2f}%"
    return f"{x:.4f}" if unit == "cosine" else f"{x:.2f}"


def _show_value(r: GateResult) -> str:
    """Value and interval: ``3.45% [2.31, 4.92]`` (points for a fraction), ``1.61 [1.58, 1.66]``, ``0.9965``."""
    if r.mode == CHECK:
        return "yes" if r.passed else "no"
    text = _number(r, r.value)
    if r.interval is not None:
        low, high = (_number(r, b).rstrip("%") for b in r.interval)
        text += f" [{low}, {high}]"
    return text


def _show_result(r: GateResult) -> str:
    verdict = "pass" if r.passed else "FAIL"
    if r.outcome == UNRESOLVED:
        return f"not resolvable: {verdict}"
    if r.mode == "confidence" and r.interval is None and not r.gate.endswith("(n/a)"):
        return f"{verdict} (no CI)"
    return f"{verdict} (CI straddles limit)" if r.straddles else verdict


def format_gate_table(rows: list[GateResult]) -> str:
    """Fixed-width table: value with its interval, limit, mode and result; accuracies in %, latency in ms.

    One table for the build machine and every deploy target: a ``target`` column appears when any row was
    measured on a target (``build`` marks the build machine's rows).
    """
    targeted = any(r.target for r in rows)
    head = ["artifact", *(["target"] if targeted else []), "gate", "mode", "value [CI]", "limit", "result"]
    cells = []
    for r in rows:
        limit = "yes" if r.mode == CHECK else f"{r.comparison} {_number(r, r.limit)}"
        where = [r.target or "build"] if targeted else []
        cells.append([r.artifact, *where, r.gate, r.mode, _show_value(r), limit, _show_result(r)])
    widths = [max(len(c) for c in column) for column in zip(head, *cells, strict=True)]
    right = {len(head) - 3, len(head) - 2}  # numbers line up on the right

    def line(row: list[str]) -> str:
        text = "  ".join(
            f"{c:>{w}}" if i in right else f"{c:<{w}}" for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return text.rstrip()

    body = [line(row) for row in cells]
    lines = [line(head), "-" * max(len(text) for text in [line(head), *body]), *body]
    levels = {r.level for r in rows if r.interval is not None and r.level is not None}
    if levels:
        shown = ", ".join(f"{level:.0%}" for level in sorted(levels))
        lines.append(
            f"[ ] {shown} intervals; a confidence gate needs the interval inside the limit; "
            "`factory data plan RECIPE` sizes the benchmark that resolves the rest"
        )
    return "\n".join(lines)


def _says_why(r: GateResult) -> bool:
    """Whether the row's one-line explanation already holds its detail (not measurable, or an unsupported estimate)."""
    return r.gate.endswith("(n/a)") or (r.outcome == UNRESOLVED and not r.straddles and bool(r.detail))


def _explain(r: GateResult) -> str:
    """Why a row failed, in one line."""
    where = f"{r.artifact} on {r.target}" if r.target else r.artifact
    if r.mode == CHECK:
        return f"gate failed: {where} {r.gate}: no"
    head = f"gate failed: {where} {r.gate} = {r.value:.4g} (limit {r.comparison} {r.limit:.4g})"
    ci = "" if r.interval is None else f"CI [{r.interval[0]:.4g}, {r.interval[1]:.4g}]"
    level = f"{r.level:.0%} " if r.level is not None else ""
    if r.gate.endswith("(n/a)"):
        return f"{head}: {r.detail or 'not measurable on this benchmark'}"
    if r.outcome == UNRESOLVED:
        if _says_why(r):
            return f"{head}: not resolvable: the benchmark cannot support it ({r.detail}), and gates.{r.key} fails then"
        remedy = (
            "more validate.latency_repeats narrow it"
            if _unit(r) == "ms"
            else "`factory data plan RECIPE` says how many benchmark pairs per group resolve it"
        )
        return f"{head}: not resolvable: {level}{ci} straddles the limit, and gates.{r.key} fails then; {remedy}"
    if r.mode == "confidence":
        if r.interval is None:
            return f"{head}: confidence mode, but the validation measured no interval for it"
        side = "above" if r.comparison == "<=" else "below"
        return f"{head}: its {level}{ci} lies wholly {side} the limit"
    return (
        f"{head}; {level}{ci}, which straddles the limit" if r.straddles else (f"{head}; {level}{ci}" if ci else head)
    )


def failure_message(rows: list[GateResult]) -> str:
    """One line per failed gate: the gate, its value and limit, and why (interval outside, or not resolvable).

    A row with a detail (the layers an INT8 model moved most) gets it on the next line.
    """
    return "\n".join(
        _explain(r) + (f"\n  {r.detail}" if r.detail and not _says_why(r) else "") for r in rows if not r.passed
    )


def gate_summary(rows: list[dict[str, Any]]) -> str:
    """``12/12 gates passed (1 not resolvable, let through by the recipe)`` from JSON rows (the release's metrics).

    A row that passed as not resolvable is counted apart: the one-line summary must not read as if it were shown.
    """
    passed = sum(bool(r["passed"]) for r in rows)
    lenient = sum(bool(r["passed"]) and r.get("outcome") == UNRESOLVED for r in rows)
    note = f" ({lenient} not resolvable, let through by the recipe)" if lenient else ""
    return f"{passed}/{len(rows)} gates passed{note}"
