"""Release gates: every limit in the recipe checked against the validate stage's measurements, as one table.

Each gate is registered under its ``gates.*`` recipe key and is a rule over artifacts: which artifacts it applies to
(from their records: reference, shipped, precision, derived_from) and what value it checks. A new artifact kind is
gated without any edit here, because the rules read the records, not names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from factory.evaluate.tables import artifact_order
from factory.recipe import GatesConfig
from factory.registry import Registry
from factory.runtime.artifacts import Artifact


@dataclass(frozen=True)
class GateResult:
    """One row of the gate table: an artifact, a metric, its value, the limit and whether it passed."""

    artifact: str
    gate: str
    value: float
    limit: float
    comparison: str  # ">=" or "<="
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row."""
        return asdict(self)


@dataclass(frozen=True)
class Gate:
    """A rule: the artifacts it applies to, and the value it compares with the recipe's limit."""

    label: str
    comparison: str
    applies: Callable[[Artifact], bool]
    # (the artifact's validation entry, its parent's entry or None) -> value; None when it cannot be measured
    value: Callable[[dict[str, Any], dict[str, Any] | None], float | None]
    needs_parent: bool = False  # compares an artifact with the one it derives from


GATES: Registry[Gate] = Registry("gate")


def _mean(entry: dict[str, Any]) -> float:
    return entry["evaluation"]["fairness"]["mean"]


GATES.register("min_accuracy")(Gate("mean accuracy", ">=", lambda a: True, lambda e, p: _mean(e)))
GATES.register("max_std")(Gate("accuracy STD", "<=", lambda a: True, lambda e, p: e["evaluation"]["fairness"]["std"]))
GATES.register("max_int8_drop")(
    Gate("INT8 drop vs FP32", "<=", lambda a: a.precision == "int8", lambda e, p: _mean(p) - _mean(e), True)
)
GATES.register("max_latency_ms")(
    Gate("latency ms (b1)", "<=", lambda a: a.shipped, lambda e, p: e["latency"]["median_ms"])
)


def _row(artifact: str, gate: str, value: float | None, limit: float, comparison: str) -> GateResult:
    if value is None:  # not measurable (the STD of a one-group benchmark): a gate that cannot be checked fails
        return GateResult(artifact, gate + " (n/a)", float("nan"), float(limit), comparison, False)
    passed = value >= limit if comparison == ">=" else value <= limit
    return GateResult(artifact, gate, float(value), float(limit), comparison, bool(passed))


def evaluate_gates(gates: GatesConfig, metrics: dict[str, Any], artifacts: list[Artifact]) -> list[GateResult]:
    """Check every configured gate on every artifact it applies to (reference artifacts are never gated).

    Rows come per artifact in build order, gates in the recipe's order; gates against a parent come last.
    """
    records = {a.name: a for a in artifacts}
    names = [n for n in artifact_order(metrics) if n in records and not records[n].reference]
    configured = [(f.name, getattr(gates, f.name)) for f in dataclasses.fields(gates)]
    configured = [(GATES.get(key), limit) for key, limit in configured if limit is not None]
    rows: list[GateResult] = []
    for pairwise in (False, True):
        for name in names:
            for gate, limit in configured:
                if gate.needs_parent != pairwise or not gate.applies(records[name]):
                    continue
                parent = records[name].derived_from
                parent_entry = metrics["artifacts"].get(parent) if parent else None
                if gate.needs_parent and parent_entry is None:
                    rows.append(_row(name, gate.label, None, limit, gate.comparison))
                    continue
                value = gate.value(metrics["artifacts"][name], parent_entry)
                rows.append(_row(name, gate.label, value, limit, gate.comparison))
    return rows


def format_gate_table(rows: list[GateResult]) -> str:
    """Fixed-width table; accuracies and drops shown in %, latency in ms."""
    head = f"{'artifact':<15}{'gate':<19}{'value':>10}{'limit':>12}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        pct = "ms" not in r.gate
        value = f"{100 * r.value:.2f}%" if pct else f"{r.value:.2f}"
        limit = f"{r.comparison} {100 * r.limit:.2f}%" if pct else f"{r.comparison} {r.limit:.2f}"
        lines.append(f"{r.artifact:<15}{r.gate:<19}{value:>10}{limit:>12}  {'pass' if r.passed else 'FAIL'}")
    return "\n".join(lines)


def failure_message(rows: list[GateResult]) -> str:
    """One line per failed gate, naming the gate, its value and its limit."""
    failed = [r for r in rows if not r.passed]
    return "\n".join(
        f"gate failed: {r.artifact} {r.gate} = {r.value:.4g} (limit {r.comparison} {r.limit:.4g})" for r in failed
    )
