"""Latency of one runtime call: warm-up, repeated timed calls, percentiles, throughput, the median's interval.

Part of the torch-free runtime layer, so a target measures itself with the same code the build uses. What is timed
is the runtime's own inference call with its input already bound (:meth:`Runner.prepare`): input checks, copies and
conversions happen before the timer starts, so the figure is the model's, comparable with OpenVINO's
``benchmark_app`` (:mod:`factory.runtime.benchmark_app`) on the same file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np

DEFAULT_BATCHES = (1,)


@dataclass(frozen=True)
class LatencyResult:
    """Wall-clock per call in milliseconds at one batch size and thread count."""

    median_ms: float  # p50: the headline figure, robust to the scheduler's outliers on a shared CPU
    median_ci: tuple[float, float]  # distribution-free interval of the median (order statistics)
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput_per_s: float  # faces per second at the median: batch / median
    batch: int
    repeats: int
    warmup: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def median_interval(samples: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the median: order statistics ``l`` and ``n - l + 1`` of the sorted samples.

    ``l`` is the smallest rank with ``P(Binomial(n, 1/2) <= l) >= (1 - level) / 2`` (at least 1): no assumption
    about the timing distribution, which is skewed, with scheduler outliers. Below 6 samples no such rank exists at
    95 %, and the interval is the whole range.
    """
    ordered = np.sort(np.asarray(samples, np.float64))
    n = len(ordered)
    rank = max(_binomial_half_quantile((1.0 - level) / 2.0, n), 1)  # 1-based
    return float(ordered[rank - 1]), float(ordered[n - rank])


def _binomial_half_quantile(q: float, n: int) -> int:
    """Smallest ``k`` with ``P(Binomial(n, 1/2) <= k) >= q`` (scipy's ``binom.ppf``; exact, no scipy on targets)."""
    # In integers: P(X <= k) >= q  <=>  sum_{i <= k} C(n, i) >= q * 2**n (floats overflow past n = 1023)
    threshold = Fraction(q) * (1 << n)
    below = 0
    for k in range(n + 1):
        below += math.comb(n, k)
        if below >= threshold:
            return k
    return n


def measure_latency(
    run: Callable[[], Any],
    warmup: int = 10,
    repeats: int = 50,
    threads: int = 1,
    level: float = 0.95,
    batch: int = 1,
) -> LatencyResult:
    """Call ``run`` ``warmup`` times untimed, then ``repeats`` times timed one by one."""
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
    median = float(np.median(ms))
    return LatencyResult(
        median_ms=median,
        median_ci=median_interval(ms, level),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        throughput_per_s=batch * 1e3 / median,
        batch=batch,
        repeats=repeats,
        warmup=warmup,
        threads=threads,
    )


def time_runner(
    runner: Any,
    batches: Sequence[int] = DEFAULT_BATCHES,
    warmup: int = 10,
    repeats: int = 50,
    level: float = 0.95,
    seed: int = 0,
) -> dict[int, LatencyResult]:
    """Latency of ``runner`` at each batch size: its own runtime call on bound normalised input (fixed noise)."""
    size = runner.contract.input_size
    rng = np.random.default_rng(seed)
    results = {}
    for batch in batches:
        x = rng.standard_normal((batch, 3, *size), dtype=np.float32)
        # a runner from elsewhere without prepare() is timed through its whole call (checks and copies included)
        call = runner.prepare(x) if hasattr(runner, "prepare") else lambda runner=runner, x=x: runner(x)
        results[batch] = measure_latency(call, warmup, repeats, runner.threads, level, batch)
    return results
