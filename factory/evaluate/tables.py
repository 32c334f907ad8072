"""Text tables of a validation, in build order, every number with its interval.

Per-group accuracy, fairness and latency of every artifact; and the paired comparisons of every artifact with the
one it derives from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from factory.runtime.benchmark_app import AGREEMENT


def artifact_order(metrics: dict[str, Any]) -> list[str]:
    """Artifact names in build order (reference, torch FP32, exported ones)."""
    return [n for n in metrics.get("order", ()) if n in metrics["artifacts"]] or list(metrics["artifacts"])


def _bound(value: float | str) -> str:
    return str(value) if isinstance(value, str) else f"{value:.2f}"


def percent_interval(value: float, ci: Sequence[float] | None, style: str = "plusminus", scale: float = 100.0) -> str:
    """``88.62 ±1.10`` (half-width of the interval) or ``3.45 [2.31, 4.92]`` (``style="brackets"``), in %.

    Plus-minus suits near-symmetric intervals; brackets show skewed ones (STD, SER) as they are, and so does
    plus-minus whenever one side of the interval is more than 1.5 times the other (bias-corrected intervals of an
    accuracy can be): a half-width would hide which side the uncertainty is on. A missing interval shows the value
    alone.
    """
    if ci is None:
        return f"{scale * value:.2f}"
    low, high = ci
    if style == "brackets" or isinstance(low, str) or isinstance(high, str) or _lopsided(value, low, high):
        scaled = [b if isinstance(b, str) else scale * b for b in (low, high)]
        return f"{scale * value:.2f} [{_bound(scaled[0])}, {_bound(scaled[1])}]"
    return f"{scale * value:.2f} ±{scale * (high - low) / 2:.2f}"


def _lopsided(value: float, low: float, high: float) -> bool:
    below, above = value - low, high - value
    if below <= 0 or above <= 0:
        return below != above  # the estimate on an end of its interval (a zero-width one is symmetric)
    return max(below, above) > 1.5 * min(below, above)


def accuracy_table(metrics: dict[str, Any]) -> str:
    """Per-group accuracy (%) ± half its interval, mean ±, STD [interval], SER and latency of every artifact."""
    groups = metrics["groups"]
    rows = []
    for name in artifact_order(metrics):
        entry = metrics["artifacts"][name]
        ev = entry["evaluation"]
        fair = ev["fairness"]
        ci = fair.get("ci") or {}
        ser = fair["ser"]
        rows.append(
            [
                name,
                *(percent_interval(ev["groups"][g]["accuracy_mean"], ev["groups"][g].get("ci")) for g in groups),
                percent_interval(fair["mean"], ci.get("mean")),
                "-" if fair["std"] is None else percent_interval(fair["std"], ci.get("std"), "brackets"),
                f"{ser:.2f}" if isinstance(ser, (int, float)) else str(ser),
                f"{entry['latency']['median_ms']:.2f}" if "latency" in entry else "-",
            ]
        )
    head = ["artifact", *groups, "mean", "STD", "SER", "ms"]
    level = _level(metrics)
    note = f"± and [ ] are {level:.0%} bootstrap intervals over subjects" if level else ""
    return _fixed_width(head, rows) + (f"\n{note}" if note else "")


def _level(metrics: dict[str, Any]) -> float | None:
    for name in artifact_order(metrics):
        uncertainty = metrics["artifacts"][name]["evaluation"].get("uncertainty")
        if uncertainty:
            return float(uncertainty["level"])
    return None


def _fixed_width(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(head, *rows, strict=True)]
    line = "  ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(head, widths, strict=True)))
    out = [line, "-" * len(line)]
    for row in rows:
        out.append(
            "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(out)


def comparison_table(metrics: dict[str, Any]) -> str:
    """Every artifact against the one it derives from, on the same pairs.

    Change in accuracy per group (points, paired interval, McNemar p-value), in the mean and in STD; empty when
    nothing was compared.
    """
    comparisons = metrics.get("comparisons") or {}
    groups = metrics["groups"]
    rows = []
    for name in artifact_order(metrics):
        if name not in comparisons:
            continue
        c = comparisons[name]
        cells = []
        for g in groups:
            entry = c["groups"][g]
            cells.append(f"{signed_interval(entry['delta'], entry['ci'])} p={_p_value(entry['mcnemar']['p_value'])}")
        std = "-" if c["std"] is None else signed_interval(c["std"]["delta"], c["std"]["ci"])
        rows.append([f"{name} vs {c['against']}", *cells, signed_interval(c["mean"]["delta"], c["mean"]["ci"]), std])
    if not rows:
        return ""
    return _fixed_width(["change (points)", *groups, "mean", "STD"], rows)


def latency_table(metrics: dict[str, Any]) -> str:
    """Every timed artifact at every batch size: median [interval], p90, p99 (ms) and faces/s.

    For an OpenVINO IR ``benchmark_app``'s median follows, with the factory's relative difference from it (flagged
    beyond :data:`~factory.runtime.benchmark_app.AGREEMENT`). Empty when nothing was timed.
    """
    rows = []
    for name in artifact_order(metrics):
        entry = metrics["artifacts"][name]
        app = entry.get("benchmark_app") or {}
        for batch, r in (entry.get("latency_by_batch") or {}).items():
            check = app.get(batch)
            if check is None:
                cross = ["-", "-", "-"]
            elif "error" in check:
                cross = ["failed", check["error"][:60], "-"]
            else:
                agrees = "yes" if abs(check["difference"]) <= AGREEMENT else "no"
                cross = [f"{check['median_ms']:.2f}", f"{100 * check['difference']:+.1f} %", agrees]
            low, high = r["median_ci"]
            rows.append(
                [
                    name,
                    batch,
                    f"{r['median_ms']:.2f} [{low:.2f}, {high:.2f}]",
                    f"{r['p90_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{r['throughput_per_s']:.0f}",
                    *cross,
                ]
            )
    if not rows:
        return ""
    head = ["artifact", "batch", "median ms", "p90", "p99", "faces/s", "benchmark_app ms", "difference"]
    head.append(f"within {AGREEMENT:.0%}")
    return _fixed_width(head, rows)


def signed_interval(delta: float, ci: Sequence[float] | None) -> str:
    """A change in points with its interval: ``-0.33 [-1.02, +0.41]``."""
    if ci is None:
        return f"{100 * delta:+.2f}"
    return f"{100 * delta:+.2f} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def _p_value(p: float) -> str:
    return f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def group_accuracies(metrics: dict[str, Any], artifact: str) -> np.ndarray:
    """Per-group accuracies of one artifact, in the benchmark's group order."""
    groups = metrics["artifacts"][artifact]["evaluation"]["groups"]
    return np.array([groups[g]["accuracy_mean"] for g in metrics["groups"]])
