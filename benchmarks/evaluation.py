#!/usr/bin/env python3
"""Evaluation benchmark: 24,000 pairs in 4 groups through everything measured per artifact, timed.

The 10-fold protocol is compared with a straightforward loop implementation of it (same answer, asserted). Then the
whole per-artifact evaluation (protocol per group and overall, TAR@FAR on insightface's 0.001 grid, the subject
bootstrap of the protocol per group with mean/STD/SER intervals, operational rates with their intervals) and one
paired comparison (intervals of the differences, McNemar per group) on embeddings shaped like the benchmark's.
Writes benchmarks/results/evaluation.json.

Usage: python benchmarks/evaluation.py [--pairs 24000] [--replicates 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from run import cpu_name, save_results

from factory.data.benchmark import PairBenchmark
from factory.evaluate.benchmark_eval import compare_results, evaluate_embeddings, resample_benchmark
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


def artifact_evaluation(n: int, replicates: int) -> tuple[float, float]:
    """Seconds for everything measured on one artifact, and for one paired comparison, on ``n`` pairs of 4 groups.

    Pairs follow the procedural layout: per group 10 folds, each with n/80 identities in one genuine and one
    impostor pair each, so the bootstrap resamples real clusters. Embeddings are 512-d, genuine pairs closer.
    """
    rng = np.random.default_rng(1)
    per_group = n // 4
    half = per_group // 20
    issame = np.tile(np.r_[np.ones(half, bool), np.zeros(half, bool)], 40)
    subjects = np.tile(np.arange(half), 80) + np.repeat(np.arange(40), 2 * half) * half
    bench = PairBenchmark(
        images=np.zeros((2 * n, 0, 0, 0), np.uint8),
        issame=issame,
        groups=np.repeat(np.arange(4), per_group),
        subjects=np.repeat(subjects, 2),
        group_names=("a", "b", "c", "d"),
    )
    first = rng.normal(size=(n, 512)).astype(np.float32)
    second = np.where(issame[:, None], first, rng.normal(size=(n, 512)).astype(np.float32))
    second = second + (1.1 + 0.1 * bench.groups[:, None]) * rng.normal(size=(n, 512)).astype(np.float32)
    fp32 = np.stack([first, second], axis=1).reshape(-1, 512)
    int8 = fp32 + 0.05 * rng.normal(size=fp32.shape).astype(np.float32)  # a small quantisation-like perturbation
    import scipy.stats  # noqa: F401  (a one-off import of about a second; not what is timed)

    draws = resample_benchmark(bench, replicates)
    start = time.perf_counter()
    before = evaluate_embeddings(fp32, bench, resampling=draws)
    report = before.to_dict()
    seconds = time.perf_counter() - start
    after = evaluate_embeddings(int8, bench, resampling=draws)
    start = time.perf_counter()
    compare_results(after, before, "fp32")
    compared = time.perf_counter() - start
    assert all(report["groups"][g]["ci"] for g in bench.group_names)
    return seconds, compared


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
    results["per_artifact_evaluation_s"], results["paired_comparison_s"] = artifact_evaluation(n, args.replicates)
    record = {
        "machine": {"cpu": cpu_name()},
        "pairs": n,
        "bootstrap_replicates": args.replicates,
        "results": results,
    }
    save_results("evaluation", record, digits=4)


if __name__ == "__main__":
    main()
