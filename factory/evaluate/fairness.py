"""Fairness across groups from per-group accuracies: mean, STD (sample and population) and SER.

The papers report the **sample** std of the group accuracies, so ``std`` is that; ``std_population`` is offered for
code that uses ``np.std``. SER = (1 - min accuracy) / (1 - max accuracy): infinite when only the best group is
error-free, undefined when every group is. JSON cannot hold either, so :meth:`FairnessSummary.to_dict` writes them
as the strings ``"inf"`` and ``"undefined"``: shown as such, never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FairnessSummary:
    """Spread of accuracy over groups (accuracies as fractions, 0..1)."""

    mean: float
    std: float
    std_population: float
    ser: float
    best_group: str
    worst_group: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields: a NaN std (one group) becomes ``None``; SER may be ``"inf"`` or ``"undefined"``."""
        return {
            "mean": self.mean,
            "std": None if math.isnan(self.std) else self.std,
            "std_population": self.std_population,
            "ser": ser_to_json(self.ser),
            "best_group": self.best_group,
            "worst_group": self.worst_group,
        }


def ser_to_json(ser: float) -> float | str:
    """SER as JSON: a number, ``"inf"`` or ``"undefined"``."""
    if math.isnan(ser):
        return "undefined"
    if math.isinf(ser):
        return "inf"
    return ser


def skewed_error_ratio(accuracies: np.ndarray) -> float:
    """(1 - min) / (1 - max); ``inf`` when the best group has no errors, ``nan`` when no group has any."""
    worst_error, best_error = 1.0 - float(np.min(accuracies)), 1.0 - float(np.max(accuracies))
    if best_error <= 0.0:
        return math.nan if worst_error <= 0.0 else math.inf
    return worst_error / best_error


def summarize_groups(accuracies: Mapping[str, float]) -> FairnessSummary:
    """Mean, sample/population STD, SER and the best/worst group of per-group accuracies."""
    if not accuracies:
        raise ValueError("no groups to summarise")
    names = list(accuracies)
    values = np.array([accuracies[n] for n in names], dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"group accuracies must be fractions in [0, 1], got {dict(accuracies)}")
    return FairnessSummary(
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if len(values) > 1 else math.nan,
        std_population=float(values.std(ddof=0)),
        ser=skewed_error_ratio(values),
        best_group=names[int(np.argmax(values))],
        worst_group=names[int(np.argmin(values))],
    )
