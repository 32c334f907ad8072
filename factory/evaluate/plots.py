"""Figures people would rather look at than read: DET curves, score histograms and accuracy per group.

A figure :mod:`factory.evaluate.operational` marks unsupported is drawn as such, never like a measured one: a
threshold as a dashed grey line labelled "unsupported", a heatmap cell hatched and uncoloured with "n/s".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from factory.evaluate.operational import estimate, is_unsupported, required_impostors
from factory.evaluate.verification import roc_curve
from factory.files import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:  # noqa: ANN001 (matplotlib figure)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", dpi=100)
    _pyplot().close(fig)
    return path


def det_curves(
    scores: np.ndarray, issame: np.ndarray, groups: np.ndarray, names: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """FNMR against FMR per group on log axes (lower left is better), one curve each."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for g, name in enumerate(names):
        mask = groups == g
        if not (issame[mask].any() and (~issame[mask]).any()):
            continue
        fmr, tmr, _ = roc_curve(scores[mask], issame[mask])
        keep = (fmr > 0) & (tmr < 1)
        ax.plot(fmr[keep], 1 - tmr[keep], label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FMR")
    ax.set_ylabel("FNMR")
    ax.set_title("DET per group")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, Path(path))


def score_histograms(
    scores: np.ndarray,
    issame: np.ndarray,
    groups: np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike[str],
    threshold: float | dict[str, Any] | None = None,
    label: str = "threshold",
) -> Path:
    """Genuine and impostor similarity histograms, a panel per group, with the global threshold marked.

    Args:
        scores: similarity per pair.
        issame: genuine flag per pair.
        groups: group index per pair.
        names: group names.
        path: the PNG to write.
        threshold: the global threshold, a number or a figure marked unsupported (drawn dashed, labelled so).
        label: its legend entry (``"threshold at FMR 1e-03"``).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), sharey=True, squeeze=False)
    bins = np.linspace(float(scores.min()), float(scores.max()), 40)
    value, shaky = estimate(threshold), is_unsupported(threshold)
    style = {"color": "0.5", "ls": "--", "label": f"{label} (unsupported)"} if shaky else {"color": "k", "label": label}
    for g, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
        mask = groups == g
        ax.hist(scores[mask & issame], bins=bins, alpha=0.6, label="genuine", density=True)
        ax.hist(scores[mask & ~issame], bins=bins, alpha=0.6, label="impostor", density=True)
        if value is not None and np.isfinite(value):
            ax.axvline(value, lw=1, **style)
        ax.set_title(name)
        ax.set_xlabel("cosine similarity")
    axes[0][0].legend(fontsize=8)
    return _save(fig, Path(path))


def accuracy_by_stage(
    accuracies: dict[str, dict[str, float]], names: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Per-group accuracy (%) at every stage of the build (x: stage in build order), a line per group."""
    plt = _pyplot()
    stages = list(accuracies)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        ax.plot(stages, [100 * accuracies[s][name] for s in stages], marker="o", label=name)
    ax.set_ylabel("verification accuracy (%)")
    ax.set_title("Accuracy by group and stage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def fmr_heatmap(result: dict, names: Sequence[str], path: str | os.PathLike[str], title: str = "") -> Path:
    """Cross-group impostor FMR at one global threshold (``cross_group_fmr``'s result), a cell per group pair.

    A cell with too few pairs for the target is hatched and left uncoloured, its text "n/s" and its pair count: a
    colour would read as a measured rate. Cells with no pairs stay blank.
    """
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    cells = result["matrix"]
    shown = np.array([[np.nan if v is None or is_unsupported(v) else v for v in row] for row in cells], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 1.1 * len(names) + 1.5))
    top = float(np.nanmax(shown)) if np.isfinite(shown).any() else 1.0
    image = ax.imshow(shown, cmap="magma_r", vmin=0.0, vmax=top or 1.0)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            if is_unsupported(cells[i][j]):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.75", lw=0))
                text = f"n/s\n{result['pairs'][i][j]} pairs"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="0.3")
            elif np.isfinite(shown[i, j]):
                ax.text(j, i, f"{shown[i, j]:.3f}", ha="center", va="center", fontsize=8, color="tab:blue")
    fig.colorbar(image, ax=ax, label="FMR")
    ax.set_title(title or f"Impostor FMR by group pair (global threshold for FMR {result['target']:g})")
    if any(is_unsupported(v) for row in cells for v in row):
        target = result["target"]
        why = "too few impostors for the threshold" if is_unsupported(result["threshold"]) else "too few pairs"
        ax.set_xlabel(f"n/s: FMR {target:g} not supported (rule of 3: {why}, needs {required_impostors(target)})")
    return _save(fig, Path(path))
