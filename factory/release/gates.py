"""Release gates: every limit in the recipe checked against the validate stage's measurements, as one table.

Each gate is registered under its ``gates.*`` recipe key and is a rule over artifacts: which artifacts it applies to
(from their records: reference, shipped, precision, derived_from), what value it checks and where that value's
confidence interval is in the metrics. A new artifact kind is gated without any edit here, because the rules read the
records, not names.

A gate is checked in one of two modes (:class:`~factory.recipe.schema.GateSpec`; a bare number in the recipe is a
point gate):

- ``point``: the point estimate against the limit. The interval is still shown, and a row whose interval straddles
  the limit is marked: its outcome is within the benchmark's noise.
- ``confidence``: the interval decides. For a ``<=`` gate it passes when the upper bound is at most the limit and
  fails when the lower bound is above it (for ``>=`` the other way round); an interval that holds the limit is "not
  resolvable", and the gate's ``unresolvable`` setting decides (default ``fail``: a gate never passes on noise).
  The INT8 drop uses the paired comparison with its parent (same pairs, same bootstrap draws), so it fails only when
  the drop is shown to be real and larger than the limit. A confidence gate whose interval was not measured fails.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from factory.compress.layer_drift import format_layers
from factory.evaluate.tables import artifact_order
from factory.recipe import GatesConfig
from factory.recipe.schema import GateSpec
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

    def __post_init__(self) -> None:
        if not self.outcome:  # a record written before outcomes existed: pass or fail was all there was
            object.__setattr__(self, "outcome", PASS if self.passed else FAIL)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row (``GateResult(**row)`` reads it back)."""
        return asdict(self)


@dataclass(frozen=True)
class Gate:
    """A rule: the artifacts it applies to, the value it compares with the recipe's limit and that value's interval."""

    label: str
    comparison: str
    applies: Callable[[Artifact], bool]
    # (the artifact's validation entry, its parent's entry or None) -> value; None when it cannot be measured
    value: Callable[[dict[str, Any], dict[str, Any] | None], float | None]
    needs_parent: bool = False  # compares an artifact with the one it derives from
    # (entry, parent entry, the paired comparison with the parent or None) -> [low, high] or None when not measured
    interval: Callable[[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None], Any] = lambda e, p, c: None
    # entry -> what a failure points at, shown with it ("" when nothing)
    detail: Callable[[dict[str, Any]], str] = lambda e: ""


GATES: Registry[Gate] = Registry("gate")


def _mean(entry: dict[str, Any]) -> float:
    return entry["evaluation"]["fairness"]["mean"]


def _fairness_ci(name: str) -> Callable[[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None], Any]:
    return lambda e, p, c: (e["evaluation"]["fairness"].get("ci") or {}).get(name)


def _drop_ci(entry: dict[str, Any], parent: dict[str, Any] | None, paired: dict[str, Any] | None) -> Any:
    # The comparison's delta is artifact minus parent; the drop is its negative, so the bounds swap.
    ci = _bounds((paired or {}).get("mean", {}).get("ci"))
    return None if ci is None else [-ci[1], -ci[0]]


GATES.register("min_accuracy")(
    Gate("mean accuracy", ">=", lambda a: True, lambda e, p: _mean(e), interval=_fairness_ci("mean"))
)
GATES.register("max_std")(
    Gate(
        "accuracy STD",
        "<=",
        lambda a: True,
        lambda e, p: e["evaluation"]["fairness"]["std"],
        interval=_fairness_ci("std"),
    )
)
GATES.register("max_int8_drop")(
    Gate(
        "INT8 drop vs FP32",
        "<=",
        lambda a: a.precision == "int8",
        lambda e, p: _mean(p) - _mean(e),
        True,
        interval=_drop_ci,
    )
)


def _group_drops(paired: dict[str, Any] | None) -> list[tuple[float, Interval | None]]:
    """Each group's drop (parent minus artifact) with its paired interval, from the comparison with the parent."""
    drops = []
    for stats in ((paired or {}).get("groups") or {}).values():
        ci = _bounds(stats.get("ci"))
        drops.append((-float(stats["delta"]), None if ci is None else (-ci[1], -ci[0])))
    return drops


def _worst_group_drop_ci(entry: dict[str, Any], parent: dict[str, Any] | None, paired: dict[str, Any] | None) -> Any:
    # The largest drop is shown inside a <= limit only when every group's upper bound is, and shown above it when
    # any group's lower bound is: so its interval runs from the largest lower bound to the largest upper bound.
    drops = _group_drops(paired)
    if not drops or any(ci is None for _, ci in drops):
        return None
    return [max(ci[0] for _, ci in drops), max(ci[1] for _, ci in drops)]


def _parity(key: str) -> Callable[[dict[str, Any], dict[str, Any] | None], float | None]:
    # The compress stage's drift from the parent on held-out faces, kept in the artifact's record.
    return lambda e, p: (e.get("parity") or {}).get(key)


GATES.register("max_int8_group_drop")(
    Gate(
        "INT8 worst group drop",
        "<=",
        lambda a: a.precision == "int8",
        lambda e, p: max((drop for drop, _ in _group_drops(e.get("paired"))), default=None),
        True,
        interval=_worst_group_drop_ci,
    )
)


def _layers_moved(entry: dict[str, Any]) -> str:
    rows = (entry.get("parity") or {}).get("layers_moved_most") or []
    if not rows:
        return ""
    return f"layers the quantization moved most (cosine to FP32, from their inputs'): {format_layers(rows)}"


for _key, _which, _stat in (("min_int8_cosine", "mean", "mean_cosine"), ("min_int8_p1_cosine", "1st pct", "p1_cosine")):
    GATES.register(_key)(
        Gate(
            f"INT8 cosine to FP32 ({_which})",
            ">=",
            lambda a: a.precision == "int8",
            _parity(_stat),
            detail=_layers_moved,
        )
    )
GATES.register("max_latency_ms")(
    Gate(
        "latency ms (b1)",
        "<=",
        lambda a: a.shipped,
        lambda e, p: e["latency"]["median_ms"],
        interval=lambda e, p, c: e["latency"].get("median_ci"),
    )
)


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


def _row(
    artifact: str,
    key: str,
    gate: Gate,
    spec: GateSpec,
    value: float | None,
    interval: Interval | None = None,
    level: float | None = None,
    detail: str = "",
) -> GateResult:
    if value is None:  # not measurable (the STD of a one-group benchmark): a gate that cannot be checked fails
        return GateResult(
            artifact, gate.label + " (n/a)", math.nan, float(spec.limit), gate.comparison, False, key, spec.mode
        )
    outcome, passed, straddles = decide(float(value), interval, spec.limit, gate.comparison, spec)
    return GateResult(
        artifact,
        gate.label,
        float(value),
        float(spec.limit),
        gate.comparison,
        passed,
        key,
        spec.mode,
        None if interval is None else [float(interval[0]), float(interval[1])],
        level,
        outcome,
        straddles,
        "" if passed else detail,
    )


def _level(*blocks: dict[str, Any] | None) -> float | None:
    for block in blocks:
        if block and block.get("level") is not None:
            return float(block["level"])
    return None


def evaluate_gates(gates: GatesConfig, metrics: dict[str, Any], artifacts: list[Artifact]) -> list[GateResult]:
    """Check every configured gate on every artifact it applies to (reference artifacts are never gated).

    Rows come per artifact in build order, gates in the recipe's order; gates against a parent come last.
    """
    records = {a.name: a for a in artifacts}
    names = [n for n in artifact_order(metrics) if n in records and not records[n].reference]
    configured = [(f.name, getattr(gates, f.name)) for f in dataclasses.fields(gates)]
    configured = [(key, GATES.get(key), GateSpec.of(setting)) for key, setting in configured if setting is not None]
    comparisons = metrics.get("comparisons") or {}
    rows: list[GateResult] = []
    for pairwise in (False, True):
        for name in names:
            for key, gate, spec in configured:
                if gate.needs_parent != pairwise or not gate.applies(records[name]):
                    continue
                parent = records[name].derived_from
                parent_entry = metrics["artifacts"].get(parent) if parent else None
                if gate.needs_parent and parent_entry is None:
                    rows.append(_row(name, key, gate, spec, None))
                    continue
                # Only a comparison with the parent the gate compares against is the drop's interval.
                paired = comparisons.get(name)
                paired = paired if paired and paired.get("against") == parent else None
                # The record's drift from its parent (compress stage) and the paired comparison ride with the entry.
                entry = {**metrics["artifacts"][name], "parity": records[name].parity, "paired": paired}
                interval = _bounds(gate.interval(entry, parent_entry, paired))
                level = _level(paired if gate.needs_parent else None, entry["evaluation"].get("uncertainty"))
                value = gate.value(entry, parent_entry)
                rows.append(_row(name, key, gate, spec, value, interval, level, gate.detail(entry)))
    return rows


def _percent(r: GateResult) -> bool:
    return "ms" not in r.gate and "cosine" not in r.gate


def _show_value(r: GateResult) -> str:
    """Value and interval: ``3.45% [2.31, 4.92]`` (points for a fraction), ``1.61 [1.58, 1.66]``, ``0.9965``."""
    if r.mode == CHECK:
        return "yes" if r.passed else "no"
    scale, unit = (100.0, "%") if _percent(r) else (1.0, "")
    digits = 4 if "cosine" in r.gate else 2
    text = f"{scale * r.value:.{digits}f}{unit}"
    if r.interval is not None:
        text += f" [{scale * r.interval[0]:.{digits}f}, {scale * r.interval[1]:.{digits}f}]"
    return text


def _show_result(r: GateResult) -> str:
    verdict = "pass" if r.passed else "FAIL"
    if r.outcome == UNRESOLVED:
        return f"not resolvable: {verdict}"
    if r.mode == "confidence" and r.interval is None and not r.gate.endswith("(n/a)"):
        return f"{verdict} (no CI)"
    return f"{verdict} (CI straddles limit)" if r.straddles else verdict


def format_gate_table(rows: list[GateResult]) -> str:
    """Fixed-width table: value with its interval, limit, mode and result; accuracies in %, latency in ms."""
    head = ["artifact", "gate", "mode", "value [CI]", "limit", "result"]
    cells = []
    for r in rows:
        digits = 4 if "cosine" in r.gate else 2
        limit = f"{r.comparison} {100 * r.limit:.2f}%" if _percent(r) else f"{r.comparison} {r.limit:.{digits}f}"
        limit = "yes" if r.mode == CHECK else limit
        cells.append([r.artifact, r.gate, r.mode, _show_value(r), limit, _show_result(r)])
    widths = [max(len(c) for c in column) for column in zip(head, *cells, strict=True)]
    right = {3, 4}  # numbers line up on the right

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


def _explain(r: GateResult) -> str:
    """Why a row failed, in one line."""
    if r.mode == CHECK:
        return f"gate failed: {r.artifact} {r.gate}: no"
    head = f"gate failed: {r.artifact} {r.gate} = {r.value:.4g} (limit {r.comparison} {r.limit:.4g})"
    ci = "" if r.interval is None else f"CI [{r.interval[0]:.4g}, {r.interval[1]:.4g}]"
    level = f"{r.level:.0%} " if r.level is not None else ""
    if r.gate.endswith("(n/a)"):
        return f"{head}: not measurable on this benchmark"
    if r.outcome == UNRESOLVED:
        remedy = (
            "more validate.latency_repeats narrow it"
            if r.key == "max_latency_ms"
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
    return "\n".join(_explain(r) + (f"\n  {r.detail}" if r.detail else "") for r in rows if not r.passed)


def gate_summary(rows: list[dict[str, Any]]) -> str:
    """``12/12 gates passed (1 not resolvable, let through by the recipe)`` from JSON rows (the release's metrics).

    A row that passed as not resolvable is counted apart: the one-line summary must not read as if it were shown.
    """
    passed = sum(bool(r["passed"]) for r in rows)
    lenient = sum(bool(r["passed"]) and r.get("outcome") == UNRESOLVED for r in rows)
    note = f" ({lenient} not resolvable, let through by the recipe)" if lenient else ""
    return f"{passed}/{len(rows)} gates passed{note}"
