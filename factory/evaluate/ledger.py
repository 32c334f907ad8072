"""The fairness ledger: per-group accuracy and operational error rates at every stage of a build.

In build order, so a release shows where accuracy or bias moved (distillation, export, quantization).
"""

from __future__ import annotations

from typing import Any

from factory.evaluate.tables import artifact_order, percent_interval, signed_interval


def build_ledger(validation: dict[str, Any], target: str = "1e-03") -> list[dict[str, Any]]:
    """One row per artifact, in build order.

    Each row: group accuracies, mean, STD (each with its interval), the mean's change from the previous stage (with
    the paired interval when the previous stage is the artifact's parent), and per-group FMR/FNMR at that
    artifact's global threshold for ``target``.
    """
    rows: list[dict[str, Any]] = []
    comparisons = validation.get("comparisons") or {}
    for name in artifact_order(validation):
        ev = validation["artifacts"][name]["evaluation"]
        operational = ev.get("operational", {}).get(target, {})
        ci = ev["fairness"].get("ci") or {}
        paired = comparisons.get(name)
        if not rows or paired is None or paired["against"] != rows[-1]["stage"]:
            paired = None
        row = {
            "stage": name,
            "accuracy": {g: ev["groups"][g]["accuracy_mean"] for g in validation["groups"]},
            "accuracy_ci": {g: ev["groups"][g].get("ci") for g in validation["groups"]},
            "mean": ev["fairness"]["mean"],
            "mean_ci": ci.get("mean"),
            "std": ev["fairness"]["std"],
            "std_ci": ci.get("std"),
            "delta_mean": None if not rows else ev["fairness"]["mean"] - rows[-1]["mean"],
            "delta_mean_ci": None if paired is None else paired["mean"]["ci"],
            "fmr": {g: e["fmr"] for g, e in operational.get("groups", {}).items()},
            "fnmr": {g: e["fnmr"] for g, e in operational.get("groups", {}).items()},
        }
        rows.append(row)
    return rows


def format_ledger(rows: list[dict[str, Any]], groups: list[str]) -> str:
    """A Markdown table: accuracy % per group, mean, STD and the change of the mean from the stage before.

    Accuracies carry ± half their interval, STD its interval, the change its paired interval when there is one.
    """
    head = "| stage | " + " | ".join(groups) + " | mean | STD | Δ mean |"
    lines = [head, "|" + "---|" * (len(groups) + 4)]
    for r in rows:
        cis = r.get("accuracy_ci") or {}
        accs = " | ".join(percent_interval(r["accuracy"][g], cis.get(g)) for g in groups)
        std = "-" if r["std"] is None else percent_interval(r["std"], r.get("std_ci"), "brackets")
        delta = "" if r["delta_mean"] is None else signed_interval(r["delta_mean"], r.get("delta_mean_ci"))
        lines.append(f"| {r['stage']} | {accs} | {percent_interval(r['mean'], r.get('mean_ci'))} | {std} | {delta} |")
    return "\n".join(lines)
