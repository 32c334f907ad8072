"""Text tables of a validation: per-group accuracy, fairness and latency of every artifact, in build order."""

from __future__ import annotations

from typing import Any

import numpy as np


def artifact_order(metrics: dict[str, Any]) -> list[str]:
    """Artifact names in build order (reference, torch FP32, exported ones)."""
    return [n for n in metrics.get("order", ()) if n in metrics["artifacts"]] or list(metrics["artifacts"])


def accuracy_table(metrics: dict[str, Any]) -> str:
    """Per-group accuracy (%), mean, STD, SER and latency of every artifact, as a fixed-width text table."""
    groups = metrics["groups"]
    head = f"{'artifact':<14}" + "".join(f"{g:>9}" for g in groups) + f"{'mean':>9}{'STD':>8}{'SER':>7}{'ms':>8}"
    lines = [head, "-" * len(head)]
    for name in artifact_order(metrics):
        entry = metrics["artifacts"][name]
        ev = entry["evaluation"]
        accs = "".join(f"{100 * ev['groups'][g]['accuracy_mean']:>9.2f}" for g in groups)
        fair = ev["fairness"]
        ser = fair["ser"]
        ser_text = f"{ser:>7.2f}" if isinstance(ser, (int, float)) and ser is not None else f"{str(ser):>7}"
        ms = f"{entry['latency']['median_ms']:>8.2f}" if "latency" in entry else f"{'-':>8}"
        std = f"{'-':>8}" if fair["std"] is None else f"{100 * fair['std']:>8.2f}"
        lines.append(f"{name:<14}{accs}{100 * fair['mean']:>9.2f}{std}{ser_text}{ms}")
    return "\n".join(lines)


def group_accuracies(metrics: dict[str, Any], artifact: str) -> np.ndarray:
    """Per-group accuracies of one artifact, in the benchmark's group order."""
    groups = metrics["artifacts"][artifact]["evaluation"]["groups"]
    return np.array([groups[g]["accuracy_mean"] for g in metrics["groups"]])
