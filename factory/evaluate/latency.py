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


def measure_latency(run: Callable[[], Any], warmup: int = 10, repeats: int = 50, threads: int = 1) -> LatencyResult:
    """Call ``run`` ``warmup`` times untimed, then ``repeats`` times timed one by one.

    The median is the headline number: robust to the scheduler hiccups a shared CPU has, unlike the mean.
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
        mean_ms=float(ms.mean()),
        p90_ms=float(np.percentile(ms, 90)),
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        repeats=repeats,
        warmup=warmup,
        threads=threads,
    )
