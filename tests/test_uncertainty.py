"""Bootstrap intervals over subjects and paired comparisons: golden values and equality with plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factory.data.benchmark import PairBenchmark
from factory.evaluate.benchmark_eval import compare_results, evaluate_embeddings, resample_benchmark
from factory.evaluate.uncertainty import (
    interval,
    mcnemar,
    protocol_replicates,
    resample_subjects,
    summary_replicates,
)
from factory.evaluate.verification import THRESHOLDS, fold_slices, verify_distances


def weighted_protocol_loop(dist: np.ndarray, issame: np.ndarray, w: np.ndarray) -> float:
    """The 10-fold protocol with pair weights, written as plainly as possible (one threshold at a time)."""
    folds = fold_slices(len(dist))
    accs = []
    for fold in folds:
        train = np.ones(len(dist), bool)
        train[fold] = False
        best_t, best = None, -1.0
        for t in THRESHOLDS:
            right = (w[train] * ((dist[train] < t) == issame[train])).sum()
            if right > best:
                best, best_t = right, t
        n = w[fold].sum()
        if n > 0:
            accs.append((w[fold] * ((dist[fold] < best_t) == issame[fold])).sum() / n)
    return float(np.mean(accs))


def scores(n: int, seed: int, gap: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    issame = np.tile(np.r_[np.ones(n // 20, bool), np.zeros(n // 20, bool)], 10)
    dist = np.where(issame, rng.normal(0.9, 0.3, n), rng.normal(0.9 + gap, 0.3, n)).clip(0, 3.99)
    return dist, issame


@pytest.mark.parametrize("n", [40, 200, 603])
def test_unit_weights_reproduce_the_protocol(n: int) -> None:
    dist, issame = scores(n - n % 20, seed=n)
    dist, issame = np.r_[dist, dist[: n % 20]], np.r_[issame, issame[: n % 20]]  # sizes that do not split evenly
    clusters = np.arange(n)
    got = protocol_replicates(dist, issame, np.ones((1, n), np.float32), clusters)
    assert got[0] == pytest.approx(verify_distances(dist, issame).accuracy_mean, abs=1e-6)


def test_weighted_replicates_equal_the_plain_weighted_loop() -> None:
    dist, issame = scores(200, seed=3, gap=0.4)
    subjects = np.repeat(np.arange(100), 2)  # two pairs per subject: the unit of resampling
    draws = resample_subjects(np.zeros(200, int), subjects, replicates=5, seed=7)
    got = protocol_replicates(dist, issame, draws.counts, draws.clusters)
    for r in range(5):
        expected = weighted_protocol_loop(dist, issame, draws.counts[r, draws.clusters].astype(float))
        assert got[r] == pytest.approx(expected, abs=1e-6)


def test_subjects_are_drawn_within_their_group() -> None:
    groups = np.repeat([0, 1], [30, 50])
    subjects = np.r_[np.repeat(np.arange(10), 3), np.repeat(np.arange(25), 2)]  # ids repeat across groups
    draws = resample_subjects(groups, subjects, replicates=200, seed=1)
    assert draws.unit == "subject" and draws.counts.shape == (200, 35)
    in_group = [np.unique(draws.clusters[groups == g]) for g in (0, 1)]
    assert len(in_group[0]) == 10 and len(in_group[1]) == 25 and not set(in_group[0]) & set(in_group[1])
    # every replicate keeps each group's number of subjects (stratified), so group sizes stay as designed
    assert (draws.counts[:, in_group[0]].sum(1) == 10).all() and (draws.counts[:, in_group[1]].sum(1) == 25).all()
    again = resample_subjects(groups, subjects, replicates=200, seed=1)
    assert np.array_equal(draws.counts, again.counts)
    assert not np.array_equal(draws.counts, resample_subjects(groups, subjects, replicates=200, seed=2).counts)
    assert resample_subjects(groups, np.arange(80), replicates=3).unit == "pair"


def test_correlated_pairs_of_one_subject_widen_the_interval() -> None:
    """Four copies of every pair under one subject behave like one pair: resampling pairs would claim 2x precision."""
    dist, issame = scores(400, seed=5, gap=0.5)
    dist, issame = np.repeat(dist, 4), np.repeat(issame, 4)
    by_subject = resample_subjects(np.zeros(1600, int), np.repeat(np.arange(400), 4), replicates=400, seed=0)
    by_pair = resample_subjects(np.zeros(1600, int), np.arange(1600), replicates=400, seed=0)
    width = {}
    for name, draws in (("subject", by_subject), ("pair", by_pair)):
        low, high = interval(protocol_replicates(dist, issame, draws.counts, draws.clusters), 0.95)
        width[name] = high - low
    assert 1.5 < width["subject"] / width["pair"] < 2.7  # sqrt(4) = 2 in theory


def test_interval_is_the_order_statistics_and_keeps_infinity() -> None:
    samples = np.arange(1.0, 41.0)  # 40 values: the 2.5 % and 97.5 % order statistics are the 1st and 39th
    assert interval(samples, 0.95) == [1.0, 39.0]
    assert interval(np.r_[np.ones(30), np.full(10, np.inf)], 0.9) == [1.0, math.inf]
    assert interval(np.array([np.nan, np.nan]), 0.95) is None


def test_bias_corrected_interval_golden() -> None:
    samples = (np.arange(1000) + 0.5) / 1000  # replicates spread evenly over (0, 1)
    # Estimate at the replicates' median: z0 = 0, the plain percentile interval.
    assert interval(samples, 0.95, 0.5) == interval(samples, 0.95)
    # Estimate with 30 % of the replicates below it: z0 = Phi^-1(0.3) = -0.524401, tails at
    # Phi(2 z0 -+ 1.959964) = Phi(-3.008766) = 0.001312 and Phi(0.911162) = 0.818898: order statistics 2 and 819.
    assert interval(samples, 0.95, 0.3) == [samples[1], samples[818]]
    # Every replicate above the estimate: z0 is held at half a replicate from the end instead of -inf.
    low, high = interval(samples, 0.95, -1.0)
    assert low == samples[0] and high < samples[100]
    assert interval(samples, 0.95, math.nan) == interval(samples, 0.95)


def test_summary_replicates_golden() -> None:
    reps = {"a": np.array([0.9, 1.0, 1.0]), "b": np.array([0.8, 0.9, 1.0]), "c": np.array([0.85, 0.95, 1.0])}
    out = summary_replicates(reps)
    assert out["mean"] == pytest.approx([0.85, 0.95, 1.0])
    assert out["std"] == pytest.approx([0.05, 0.05, 0.0])
    assert out["ser"][0] == pytest.approx(0.2 / 0.1)
    assert math.isinf(out["ser"][1]) and math.isnan(out["ser"][2])  # best group error-free; no group errs


def test_mcnemar_exact_golden() -> None:
    against = np.r_[np.ones(10, bool), np.zeros(2, bool), np.ones(50, bool)]
    artifact = np.r_[np.zeros(10, bool), np.ones(2, bool), np.ones(50, bool)]
    out = mcnemar(against, artifact)
    assert (out["only_against_correct"], out["only_artifact_correct"], out["pairs"]) == (10, 2, 62)
    assert out["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # 2 * P(X <= 2), X ~ Bin(12, 1/2)
    assert mcnemar(against, against)["p_value"] == 1.0


def benchmark(n_per_group: int, groups: int = 2) -> PairBenchmark:
    issame = np.tile(np.r_[np.ones(n_per_group // 20, bool), np.zeros(n_per_group // 20, bool)], 10 * groups)
    half = n_per_group // 20
    # identity j of a fold appears in its genuine pair j and impostor pair j (as the procedural layout does)
    subjects = (
        np.tile(np.repeat(np.arange(half), 1), 2 * 10 * groups) + np.repeat(np.arange(10 * groups), 2 * half) * half
    )
    return PairBenchmark(
        images=np.zeros((2 * len(issame), 0, 0, 0), np.uint8),
        issame=issame,
        groups=np.repeat(np.arange(groups), n_per_group),
        subjects=np.repeat(subjects, 2),
        group_names=tuple(f"g{g}" for g in range(groups)),
    )


def embeddings_for(bench: PairBenchmark, noise: np.ndarray, seed: int) -> np.ndarray:
    """Pair embeddings whose genuine pairs are closer, with per-group noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(len(bench.issame), 64))
    other = rng.normal(size=(len(bench.issame), 64))
    second = np.where(bench.issame[:, None], base, other) + noise[bench.groups][:, None] * rng.normal(size=base.shape)
    return np.stack([base, second], axis=1).reshape(-1, 64)


def test_evaluation_json_carries_intervals_around_the_estimates() -> None:
    bench = benchmark(400)
    result = evaluate_embeddings(embeddings_for(bench, np.array([1.0, 1.3]), 0), bench, replicates=300)
    report = result.to_dict()
    for g in ("g0", "g1"):
        low, high = report["groups"][g]["ci"]
        assert low <= report["groups"][g]["accuracy_mean"] <= high and 0 < high - low < 0.15
    fairness = report["fairness"]
    assert fairness["ci"]["mean"][0] <= fairness["mean"] <= fairness["ci"]["mean"][1]
    assert fairness["ci"]["std"][0] >= 0 and fairness["ci"]["std"][1] > fairness["ci"]["std"][0]
    assert report["uncertainty"] == {"level": 0.95, "replicates": 300, "seed": 0, "unit": "subject"}


def test_paired_comparison_finds_a_change_in_one_group_only() -> None:
    bench = benchmark(2000)
    draws = resample_benchmark(bench, replicates=400)
    before = evaluate_embeddings(embeddings_for(bench, np.array([2.0, 2.0]), 0), bench, resampling=draws)
    # the same people and captures, group g1 degraded: more noise on the second image of its pairs
    after = evaluate_embeddings(embeddings_for(bench, np.array([2.0, 2.4]), 0), bench, resampling=draws)
    same = compare_results(before, before, "before")
    assert same["mean"] == {"delta": 0.0, "ci": [0.0, 0.0]} and same["groups"]["g0"]["mcnemar"]["p_value"] == 1.0
    change = compare_results(after, before, "before")
    assert change["against"] == "before" and change["level"] == 0.95
    g0, g1 = change["groups"]["g0"], change["groups"]["g1"]
    assert g0["delta"] == 0.0 and g0["mcnemar"]["p_value"] == 1.0  # g0's embeddings did not change at all
    assert g1["delta"] < 0 and g1["ci"][1] < 0 and g1["mcnemar"]["p_value"] < 1e-3
    assert change["mean"]["ci"][1] < 0 and change["std"]["delta"] > 0
    # a paired interval is narrower than the two separate intervals would suggest (widths added in quadrature)
    widths = [np.diff(r.to_dict()["groups"]["g1"]["ci"])[0] for r in (before, after)]
    assert g1["ci"][1] - g1["ci"][0] < 0.8 * math.hypot(*widths)


def test_results_with_different_draws_are_not_paired() -> None:
    bench = benchmark(200)
    emb = embeddings_for(bench, np.array([1.0, 1.0]), 0)
    a = evaluate_embeddings(emb, bench, resampling=resample_benchmark(bench, replicates=50, seed=0))
    b = evaluate_embeddings(emb, bench, resampling=resample_benchmark(bench, replicates=50, seed=1))
    with pytest.raises(ValueError, match="different draws"):
        compare_results(a, b, "b")
