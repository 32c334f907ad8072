#!/usr/bin/env python3
"""Evaluation benchmark: 24,000 pairs through the protocol, TAR@FAR and the bootstrap, timed.

The 10-fold protocol is compared with a straightforward loop implementation of it (same answer, asserted).
Writes benchmarks/results/evaluation.json.

Usage: python benchmarks/evaluation.py [--pairs 24000] [--replicates 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from run import cpu_name, save_results

from factory.evaluate.operational import operational_fairness
from factory.evaluate.verification import THRESHOLDS, tar_at_far, verify_distances


def loop_protocol(dist: np.ndarray, issame: np.ndarray) -> float:
    """insightface's accuracy protocol as plain loops over folds and thresholds (what it costs without vectorising)."""
    folds = np.array_split(np.arange(len(dist)), 10)
    accs = []
    for test in folds:
        train = np.setdiff1d(np.arange(len(dist)), test)
        train_acc = [np.mean((dist[train] < t) == issame[train]) for t in THRESHOLDS]
        best = THRESHOLDS[int(np.argmax(train_acc))]
        accs.append(np.mean((dist[test] < best) == issame[test]))
    return float(np.mean(accs))


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=24000)
    parser.add_argument("--replicates", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.pairs
    issame = np.tile([True, False], n // 2)
    groups = np.repeat(np.arange(4), n // 4)
    dist = np.where(issame, rng.normal(0.9, 0.3, n), rng.normal(1.8, 0.2, n) - 0.05 * groups).clip(0, 3.99)
    subjects = np.arange(n) // 2
    results: dict[str, float] = {}
    results["protocol_vectorised_s"], fast = timed(lambda: verify_distances(dist, issame).accuracy_mean)
    results["protocol_loop_s"], slow = timed(lambda: loop_protocol(dist, issame), repeats=1)
    assert abs(fast - slow) < 1e-12, "the two implementations disagree"
    results["protocol_speedup"] = results["protocol_loop_s"] / results["protocol_vectorised_s"]
    results["tar_at_far_s"], _ = timed(lambda: tar_at_far(dist, issame, 1e-3))
    results["operational_bootstrap_s"], _ = timed(
        lambda: operational_fairness(1 - dist / 2, issame, groups, "abcd", subjects, (1e-3,), args.replicates),
        repeats=1,
    )
    record = {
        "machine": {"cpu": cpu_name()},
        "pairs": n,
        "bootstrap_replicates": args.replicates,
        "results": results,
    }
    save_results("evaluation", record, digits=4)


if __name__ == "__main__":
    main()
