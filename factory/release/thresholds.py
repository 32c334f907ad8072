"""Operating thresholds a deployer sets: per artifact, for FMR 1e-3 and 1e-4, global and per group.

The global threshold is the one the fairness numbers are measured at (one threshold for everyone, as a deployment
runs). The per-group thresholds are what each group alone would need for the same FMR: their spread is how far one
global threshold is from treating the groups alike. Each is a number only where the benchmark has the impostor
pairs to back it (rule of three); elsewhere it is recorded as unsupported, with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from factory.evaluate.operational import DEFAULT_TARGETS, support_note, threshold_at_fmr

# Scores are cosine similarities (the validate stage's squared distances of unit vectors, d: 1 - d / 2); a pair
# is accepted as the same person when its score is at least the threshold.
SCORE = "cosine similarity of the two embeddings; a pair matches when it is >= the threshold"


def _threshold(impostor_scores: np.ndarray, target: float, where: str = "") -> dict[str, Any]:
    why = support_note(len(impostor_scores), target, where)
    if len(impostor_scores) == 0:
        return {
            "threshold": None,
            "supported": False,
            "unsupported": f"no impostor pairs{' in ' + where if where else ''}",
        }
    value = threshold_at_fmr(impostor_scores, target)
    out: dict[str, Any] = {"threshold": value, "supported": why is None, "impostors": int(len(impostor_scores))}
    if why is not None:
        out["unsupported"] = why
    return out


def operating_thresholds(distances: Path, benchmark: Path, artifacts: list[str]) -> dict[str, Any]:
    """``{"score": what is compared, "artifacts": {name: {"1e-03": {threshold, supported, groups: {...}}}}}``.

    Per artifact and FMR target: the global threshold and each group's.

    Args:
        distances: the validate stage's ``pair_distances.npz`` (one array of squared distances per artifact).
        benchmark: the data stage's ``benchmark.npz`` (only its pair labels and groups are read).
        artifacts: the artifacts to cover (each must be in ``distances``).
    """
    with np.load(benchmark, allow_pickle=False) as data:
        issame, groups = data["issame"].astype(bool), data["groups"]
        names = [str(g) for g in data["group_names"]]
    out: dict[str, Any] = {}
    with np.load(distances, allow_pickle=False) as dist:
        for name in artifacts:
            scores = 1.0 - np.asarray(dist[name], np.float64) / 2.0
            per_target = {}
            for target in DEFAULT_TARGETS:
                entry = _threshold(scores[~issame], target)
                entry["groups"] = {
                    g: _threshold(scores[~issame & (groups == i)], target, f"group {g!r}") for i, g in enumerate(names)
                }
                per_target[f"{target:.0e}"] = entry
            out[name] = per_target
    return {"score": SCORE, "artifacts": out}
