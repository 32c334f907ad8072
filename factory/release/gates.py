"""Release gates: every limit in the recipe checked against the validate stage's measurements, as one table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from factory.evaluate.validate import EXPORTED, FP32, INT8, REFERENCE, artifact_order
from factory.recipe import GatesConfig


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


def _row(artifact: str, gate: str, value: float | None, limit: float, comparison: str) -> GateResult:
    if value is None:  # not measurable (the STD of a one-group benchmark): a gate that cannot be checked fails
        return GateResult(artifact, gate + " (n/a)", float("nan"), float(limit), comparison, False)
    passed = value >= limit if comparison == ">=" else value <= limit
    return GateResult(artifact, gate, float(value), float(limit), comparison, bool(passed))


def evaluate_gates(gates: GatesConfig, metrics: dict[str, Any]) -> list[GateResult]:
    """Check every configured gate on every artifact it applies to (the teacher is a reference, never gated)."""
    artifacts = {k: metrics["artifacts"][k] for k in artifact_order(metrics) if k != REFERENCE}
    rows: list[GateResult] = []
    for name, entry in artifacts.items():
        fairness = entry["evaluation"]["fairness"]
        if gates.min_accuracy is not None:
            rows.append(_row(name, "mean accuracy", fairness["mean"], gates.min_accuracy, ">="))
        if gates.max_std is not None:
            rows.append(_row(name, "accuracy STD", fairness["std"], gates.max_std, "<="))
        if gates.max_latency_ms is not None and name in EXPORTED:
            rows.append(_row(name, "latency ms (b1)", entry["latency"]["median_ms"], gates.max_latency_ms, "<="))
    if gates.max_int8_drop is not None:
        drop = artifacts[FP32]["evaluation"]["fairness"]["mean"] - artifacts[INT8]["evaluation"]["fairness"]["mean"]
        rows.append(_row(INT8, "INT8 drop vs FP32", drop, gates.max_int8_drop, "<="))
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
