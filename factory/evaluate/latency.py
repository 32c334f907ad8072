"""Batch-1 latency: the median of repeated timed calls after warm-up, at a fixed thread count."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatencyResult:
    """Wall-clock per call in milliseconds; ``threads`` is the runtime's thread count it was measured at."""

    median_ms: float
    median_ci: tuple[float, float]  # distribution-free interval of the median (order statistics)
    mean_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    warmup: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def median_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the median: order statistics ``l`` and ``n - l + 1`` of the sorted samples.

    ``l`` is the smallest rank with ``P(Binomial(n, 1/2) < l) <= (1 - level) / 2``: no assumption about the timing
    distribution (which is skewed, with scheduler outliers). Below 6 samples no such rank exists at 95 %, and the
    interval is the whole range.
    """
    from scipy.stats import binom

    ordered = np.sort(np.asarray(samples, np.float64))
    n = len(ordered)
    rank = max(int(binom.ppf((1.0 - level) / 2.0, n, 0.5)), 1)  # 1-based
    return float(ordered[rank - 1]), float(ordered[n - rank])


def measure_latency(
    run: Callable[[], Any], warmup: int = 10, repeats: int = 50, threads: int = 1, level: float = 0.95
) -> LatencyResult:
    """Call ``run`` ``warmup`` times untimed, then ``repeats`` times timed one by one.

    The median is the headline number: robust to the scheduler hiccups a shared CPU has, unlike the mean; it comes
    with its interval at ``level``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        run()
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        run()
        times[i] = time.perf_counter() - start
    ms = times * 1e3
    return LatencyResult(
        median_ms=float(np.median(ms)),
        median_ci=median_interval(ms, level),
        mean_ms=float(ms.mean()),
        p90_ms=float(np.percentile(ms, 90)),
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        repeats=repeats,
        warmup=warmup,
        threads=threads,
    )
