"""The fairness ledger: per-group accuracy and operational error rates at every stage of a build.

In build order, so a release shows where accuracy or bias moved (distillation, export, quantization).
"""

from __future__ import annotations

from typing import Any

from factory.evaluate.tables import artifact_order


def build_ledger(validation: dict[str, Any], target: str = "1e-03") -> list[dict[str, Any]]:
    """One row per artifact, in build order.

    Each row: group accuracies, mean, STD, the mean's change from the previous stage, and per-group FMR/FNMR at that
    artifact's global threshold for ``target``.
    """
    rows: list[dict[str, Any]] = []
    for name in artifact_order(validation):
        ev = validation["artifacts"][name]["evaluation"]
        operational = ev.get("operational", {}).get(target, {})
        row = {
            "stage": name,
            "accuracy": {g: ev["groups"][g]["accuracy_mean"] for g in validation["groups"]},
            "mean": ev["fairness"]["mean"],
            "std": ev["fairness"]["std"],
            "delta_mean": None if not rows else ev["fairness"]["mean"] - rows[-1]["mean"],
            "fmr": {g: e["fmr"] for g, e in operational.get("groups", {}).items()},
            "fnmr": {g: e["fnmr"] for g, e in operational.get("groups", {}).items()},
        }
        rows.append(row)
    return rows


def format_ledger(rows: list[dict[str, Any]], groups: list[str]) -> str:
    """A Markdown table: accuracy % per group, mean, STD and the change of the mean from the stage before."""
    head = "| stage | " + " | ".join(groups) + " | mean | STD | Δ mean |"
    lines = [head, "|" + "---|" * (len(groups) + 4)]
    for r in rows:
        accs = " | ".join(f"{100 * r['accuracy'][g]:.2f}" for g in groups)
        std = "-" if r["std"] is None else f"{100 * r['std']:.2f}"
        delta = "" if r["delta_mean"] is None else f"{100 * r['delta_mean']:+.2f}"
        lines.append(f"| {r['stage']} | {accs} | {100 * r['mean']:.2f} | {std} | {delta} |")
    return "\n".join(lines)
