"""Golden values for the verification protocol and the fairness summary (latency: tests/test_latency.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factory.data.benchmark import PairBenchmark
from factory.evaluate.benchmark_eval import embed_images, evaluate_embeddings
from factory.evaluate.fairness import summarize_groups
from factory.evaluate.verification import (
    THRESHOLDS,
    VAL_THRESHOLDS,
    correct_counts,
    fold_slices,
    pair_distances,
    verify_distances,
    verify_pairs,
)
from factory.runtime.embedding import fuse_flip


def loop_protocol(dist: np.ndarray, issame: np.ndarray) -> tuple[float, float, list[float]]:
    """The insightface accuracy protocol written as plainly as possible, to cross-check the vectorised one."""
    n = len(dist)
    sizes = [n // 10 + (1 if k < n % 10 else 0) for k in range(10)]
    starts = np.cumsum([0] + sizes)
    accs, chosen = [], []
    for k in range(10):
        test = np.arange(starts[k], starts[k + 1])
        train = np.setdiff1d(np.arange(n), test)
        best_acc, best_t = -1.0, None
        for t in THRESHOLDS:
            acc = np.mean((dist[train] < t) == issame[train])
            if acc > best_acc:  # strict: keeps the first maximum
                best_acc, best_t = acc, t
        accs.append(float(np.mean((dist[test] < best_t) == issame[test])))
        chosen.append(float(best_t))
    return float(np.mean(accs)), float(np.std(accs)), chosen


def test_folds_have_sklearn_kfold_sizes() -> None:
    sizes = [s.stop - s.start for s in fold_slices(25)]
    assert sizes == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    assert fold_slices(25)[0].start == 0 and fold_slices(25)[-1].stop == 25
    with pytest.raises(ValueError, match="cannot be split"):
        fold_slices(9)


def test_correct_counts_use_strict_less_than() -> None:
    dist = np.array([0.1, 0.5, 0.3, 0.7])
    issame = np.array([True, True, False, False])
    counts = correct_counts(dist, issame, np.array([0.0, 0.1, 0.2, 0.35, 0.6, 1.0]))
    assert counts.tolist() == [2, 2, 3, 2, 3, 2]


def test_perfect_separation_picks_first_threshold_above_genuine() -> None:
    issame = np.tile([True, False], 10)
    dist = np.where(issame, 0.5, 1.5)
    result = verify_distances(dist, issame)
    assert result.accuracy_mean == 1.0 and result.accuracy_std == 0.0
    # 0.50 itself fails (0.5 < 0.5 is false); 0.51 is the first threshold that separates.
    assert result.fold_thresholds == pytest.approx((0.51,) * 10)


def test_hard_genuine_pair_in_one_fold() -> None:
    # 10 folds of (genuine, impostor). Fold 0's genuine pair is far (2.0): held out it is missed at the 0.21
    # threshold learnt on the others; every other fold learns a threshold above 2.0 and is perfect.
    issame = np.tile([True, False], 10)
    dist = np.where(issame, 0.2, 3.0)
    dist[0] = 2.0
    result = verify_distances(dist, issame)
    assert result.fold_accuracies == pytest.approx((0.5,) + (1.0,) * 9)
    assert result.accuracy_mean == pytest.approx(0.95)
    assert result.accuracy_std == pytest.approx(0.15)  # population std: sqrt((0.45² + 9·0.05²) / 10)
    assert result.fold_thresholds == pytest.approx((0.21,) + (2.01,) * 9)


@pytest.mark.parametrize("n", [20, 203, 600])
def test_vectorised_protocol_equals_plain_loop(n: int) -> None:
    rng = np.random.default_rng(n)
    issame = rng.random(n) < 0.5
    dist = np.where(issame, rng.normal(1.0, 0.35, n), rng.normal(1.6, 0.3, n)).clip(0, 4)
    dist = np.round(dist, 2)  # ties on the threshold grid exercise the strict < and first-maximum rules
    mean, std, chosen = loop_protocol(dist, issame)
    result = verify_distances(dist, issame)
    assert result.accuracy_mean == pytest.approx(mean, abs=1e-12)
    assert result.accuracy_std == pytest.approx(std, abs=1e-12)
    assert result.fold_thresholds == pytest.approx(tuple(chosen))


def test_pair_embeddings_are_normalised_and_flip_fused() -> None:
    a = np.array([[3.0, 0.0], [0.0, 2.0]])
    assert pair_distances(a) == pytest.approx([2.0])  # unit vectors at 90°: |u - v|² = 2
    fused = fuse_flip(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert fused == pytest.approx(np.full((1, 2), math.sqrt(0.5)))
    with pytest.raises(ValueError, match="NaN"):
        pair_distances(np.array([[np.nan, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="2N×D"):
        pair_distances(np.ones((3, 2)))
    with pytest.raises(ValueError, match="3 embedding rows"):
        verify_pairs(np.ones((3, 2)), np.ones(2, bool))


def test_fairness_summary_golden() -> None:
    summary = summarize_groups({"a": 0.99, "b": 0.98, "c": 0.97, "d": 0.96})
    assert summary.mean == pytest.approx(0.975)
    assert summary.std == pytest.approx(math.sqrt(0.0005 / 3))  # sample std, as the papers report
    assert summary.std_population == pytest.approx(math.sqrt(0.0005 / 4))
    assert summary.ser == pytest.approx(4.0)  # 4 % error against 1 %
    assert (summary.best_group, summary.worst_group) == ("a", "d")


def test_zero_error_groups_are_reported_not_crashed() -> None:
    one_perfect = summarize_groups({"a": 1.0, "b": 0.9})
    assert math.isinf(one_perfect.ser) and one_perfect.to_dict()["ser"] == "inf"
    all_perfect = summarize_groups({"a": 1.0, "b": 1.0})
    assert math.isnan(all_perfect.ser) and all_perfect.to_dict()["ser"] == "undefined"
    single = summarize_groups({"a": 0.9})
    assert single.to_dict()["std"] is None and single.std_population == 0.0
    with pytest.raises(ValueError, match="no groups"):
        summarize_groups({})
    with pytest.raises(ValueError, match="fractions"):
        summarize_groups({"a": 97.0})


def tiny_benchmark() -> tuple[PairBenchmark, np.ndarray]:
    """Two groups of 20 pairs; group 'easy' is separable, group 'hard' has impostors as close as genuines."""
    rng = np.random.default_rng(0)
    issame = np.tile([True, False], 20)
    groups = np.repeat([0, 1], 20)
    emb = rng.normal(size=(80, 16))
    for k in range(40):
        if issame[k] or (groups[k] == 1 and k % 4 == 1):
            emb[2 * k + 1] = emb[2 * k] + 0.05 * rng.normal(size=16)
    bench = PairBenchmark(
        images=np.zeros((80, 3, 4, 4), np.uint8),
        issame=issame,
        groups=groups,
        subjects=np.arange(80),
        group_names=("easy", "hard"),
    )
    return bench, emb


def test_evaluate_embeddings_scores_each_group_on_its_own_pairs() -> None:
    bench, emb = tiny_benchmark()
    result = evaluate_embeddings(emb, bench)
    assert result.groups["easy"].accuracy_mean == 1.0
    hard_rows = np.arange(40, 80)
    assert result.groups["hard"] == verify_pairs(emb[hard_rows], bench.issame[20:])
    assert result.groups["hard"].accuracy_mean < 1.0
    assert result.fairness.worst_group == "hard"
    as_json = result.to_dict()
    assert as_json["groups"]["easy"]["accuracy_mean"] == 1.0
    assert as_json["fairness"]["ser"] == "inf"


def test_embed_images_fuses_the_mirrored_image() -> None:
    images = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2)

    def embed(x: np.ndarray) -> np.ndarray:  # depends on left/right order, so the flip changes it
        return x[:, 0, 0, :].astype(np.float64)

    plain = embed_images(embed, images, batch_size=1, flip=False)
    fused = embed_images(embed, images, batch_size=1, flip=True)
    expected = fuse_flip(embed(images), embed(images[..., ::-1]))
    assert fused == pytest.approx(expected.astype(np.float32))
    assert not np.allclose(plain, fused)


def test_benchmark_file_round_trip(tmp_path) -> None:
    bench, _ = tiny_benchmark()
    bench.save(tmp_path / "b.npz")
    loaded = PairBenchmark.load(tmp_path / "b.npz")
    assert loaded.group_names == ("easy", "hard")
    assert np.array_equal(loaded.issame, bench.issame) and np.array_equal(loaded.images, bench.images)
    np.savez(tmp_path / "bad.npz", images=bench.images)
    with pytest.raises(ValueError, match="missing arrays"):
        PairBenchmark.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", **{**vars(bench), "images": bench.images[:3], "group_names": ["easy", "hard"]})
    with pytest.raises(ValueError, match=r"short\.npz: images .* do not hold"):
        PairBenchmark.load(tmp_path / "short.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        PairBenchmark.load(tmp_path / "junk.npz")


# ---------------------------------------------------------------------------------------------------------------
# TAR@FAR, ROC and operational fairness
# ---------------------------------------------------------------------------------------------------------------


def test_roc_curve_at_every_distinct_score() -> None:
    from factory.evaluate.verification import roc_curve

    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    issame = np.array([True, False, True, True, False])
    fmr, tmr, thresholds = roc_curve(scores, issame)
    assert thresholds.tolist() == [np.inf, 0.9, 0.8, 0.3, 0.1]
    assert tmr.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    assert fmr.tolist() == pytest.approx([0, 0, 0.5, 0.5, 1])


def test_threshold_at_fmr_never_exceeds_the_target() -> None:
    from factory.evaluate.operational import supports_target, threshold_at_fmr

    impostors = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    t = threshold_at_fmr(impostors, 1e-2)  # 10 false matches allowed: accept only the top 10 (0.990 .. 0.999)
    assert (impostors >= t).sum() == 10 and t > 0.989
    assert (impostors >= threshold_at_fmr(impostors, 1e-3)).sum() == 1
    assert (impostors >= threshold_at_fmr(impostors, 1e-4)).sum() == 0
    assert supports_target(3000, 1e-3) and not supports_target(2999, 1e-3)


def test_gini_garbe_fdr_golden() -> None:
    from factory.evaluate.operational import gini, summary_measures

    # Gini of (1, 3): n/(n-1) * sum|xi-xj| / (2 n^2 mean) = 2 * 4 / (2 * 4 * 2) = 0.5
    assert gini([1.0, 3.0]) == pytest.approx(0.5)
    assert gini([2.0, 2.0, 2.0]) == 0.0 and gini([0.0, 0.0]) == 0.0
    s = summary_measures(fmr=[0.001, 0.004], fnmr=[0.02, 0.02])
    assert s["fmr_max_geomean"] == pytest.approx(0.004 / 0.002)  # geomean of 0.001 and 0.004 is 0.002
    assert s["fmr_max_min"] == pytest.approx(4.0) and s["fnmr_max_min"] == pytest.approx(1.0)
    assert s["garbe"] == pytest.approx(0.5 * gini([0.001, 0.004]) + 0.5 * 0.0)
    assert s["fdr"] == pytest.approx(1 - 0.5 * 0.003)
    zero = summary_measures(fmr=[0.0, 0.01], fnmr=[0.0, 0.0])
    assert zero["fmr_max_geomean"] == "not estimable" and zero["fmr_max_min"] == "inf"
    assert zero["fnmr_max_min"] == "not estimable"


def test_operational_fairness_per_group_at_one_threshold() -> None:
    from factory.evaluate.operational import operational_fairness

    rng = np.random.default_rng(0)
    n = 4000
    groups = np.repeat([0, 1], n // 2)
    issame = np.tile([True, False], n // 2)
    # Group 1's impostors look more alike: at a global threshold it gets more false matches.
    scores = np.where(issame, rng.normal(0.7, 0.1, n), rng.normal(0.0, 0.1, n) + 0.15 * groups)
    subjects = np.arange(n) // 2
    result = operational_fairness(scores, issame, groups, ["a", "b"], subjects, targets=(1e-2, 1e-3), replicates=200)
    block = result["1e-02"]
    assert block["fmr"] <= 1e-2 and block["supported"]  # 2000 impostors >= 3 / 1e-2
    a, b = block["groups"]["a"], block["groups"]["b"]
    assert a["impostors"] == b["impostors"] == n // 4
    assert b["fmr"] > a["fmr"]
    assert a["fmr_ci"][0] <= a["fmr"] <= a["fmr_ci"][1] and b["fnmr_ci"][0] <= b["fnmr"] <= b["fnmr_ci"][1]
    assert a["fmr_supported"]  # 1000 impostors in the group back FMR 1e-2 (>= 300) ...
    fine = result["1e-03"]
    assert not fine["supported"] and not fine["groups"]["a"]["fmr_supported"]  # ... but not 1e-3 (< 3000)
    assert fine["threshold"]["unsupported"].startswith("rule of 3: 2000 impostor pairs")
    assert fine["groups"]["b"]["fmr"]["estimate"] > fine["groups"]["a"]["fmr"]["estimate"]  # marked, still measured


def golden_operational_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group a: 40 impostors, 10 genuine; group b: 10 impostors, 10 genuine; scores chosen to count by hand."""
    imp_a = np.r_[np.arange(37) / 100, [0.91, 0.92, 0.93]]  # 0.00 .. 0.36, then three high impostors
    imp_b = np.r_[np.arange(8) / 100, [0.96, 0.97]]
    gen_a = np.r_[[0.30, 0.35], np.full(8, 0.8)]  # two below a threshold just above 0.36
    gen_b = np.r_[[0.20], np.full(9, 0.8)]
    scores = np.r_[imp_a, gen_a, imp_b, gen_b]
    issame = np.r_[np.zeros(40, bool), np.ones(10, bool), np.zeros(10, bool), np.ones(10, bool)]
    groups = np.r_[np.zeros(50, int), np.ones(20, int)]
    return scores, issame, groups, np.arange(70)


def test_operational_golden_supported_target_gives_numbers_and_marks_only_the_short_group() -> None:
    from factory.evaluate.operational import operational_fairness

    scores, issame, groups, subjects = golden_operational_pairs()
    # FMR 0.1 needs 30 impostors (rule of 3): 50 overall and group a's 40 back it, group b's 10 do not. 5 false
    # matches are allowed over 50: the 5 high impostors, so the threshold lies just above 0.36.
    block = operational_fairness(scores, issame, groups, ["a", "b"], subjects, targets=(0.1,), replicates=50)["1e-01"]
    assert block["supported"] and block["threshold"] == np.nextafter(0.36, 1) and block["fmr"] == 0.1
    a, b = block["groups"]["a"], block["groups"]["b"]
    assert (a["fmr"], a["fnmr"], b["fnmr"]) == (3 / 40, 0.2, 0.1)  # plain numbers
    assert isinstance(a["fmr_ci"], list) and isinstance(b["fnmr_ci"], list)
    assert b["fmr"] == {
        "unsupported": "rule of 3: group 'b' has 10 impostor pairs, which support FMR >= 3.0e-01 at best, not 1e-01 "
        "(needs 30)",
        "estimate": 0.2,
    }
    assert b["fmr_ci"]["unsupported"] == b["fmr"]["unsupported"] and len(b["fmr_ci"]["estimate"]) == 2
    summary = block["summary"]
    assert summary["fnmr_max_min"] == pytest.approx(2.0)  # FNMR alone: measured at a supported threshold
    assert summary["fnmr_max_geomean"] == pytest.approx(0.2 / math.sqrt(0.2 * 0.1))
    for key in ("fmr_max_geomean", "fmr_max_min", "garbe", "fdr"):
        assert "group 'b'" in summary[key]["unsupported"], key
    assert summary["fmr_max_min"]["estimate"] == pytest.approx(0.2 / 0.075)
    assert summary["fdr"]["estimate"] == pytest.approx(1 - 0.5 * (0.2 - 0.075) - 0.5 * 0.1)


def test_operational_golden_unsupported_target_marks_every_figure() -> None:
    from factory.evaluate.operational import operational_fairness

    scores, issame, groups, subjects = golden_operational_pairs()
    # FMR 1e-2 needs 300 impostors; 50 leave the threshold itself to chance (no false match allowed: above 0.97).
    block = operational_fairness(scores, issame, groups, ["a", "b"], subjects, targets=(1e-2,), replicates=50)["1e-02"]
    why = "rule of 3: 50 impostor pairs, which support FMR >= 6.0e-02 at best, not 1e-02 (needs 300)"
    assert not block["supported"]
    assert block["threshold"] == {"unsupported": why, "estimate": np.nextafter(0.97, 1)}
    assert block["fmr"] == {"unsupported": why, "estimate": 0.0}
    for name, fnmr in (("a", 1.0), ("b", 1.0)):
        entry = block["groups"][name]
        assert entry["fmr"] == {"unsupported": why, "estimate": 0.0}
        assert entry["fnmr"] == {"unsupported": why, "estimate": fnmr}  # read at an unsupported threshold
        assert entry["fmr_ci"]["unsupported"] == entry["fnmr_ci"]["unsupported"] == why
        assert (entry["false_matches"], entry["genuine"]) == (0, 10)  # counts are observations, not estimates
    assert block["summary"]["fmr_max_min"] == {"unsupported": why, "estimate": "not estimable"}
    assert all(v["unsupported"] == why for v in block["summary"].values())


def plain_numbers(value: object, path: str = "") -> list[str]:
    """Paths of every number in ``value`` that is not a count and not inside an unsupported mark."""
    counts = {"target_fmr", "target", "genuine", "impostors", "false_matches", "false_non_matches", "pairs"}
    if isinstance(value, dict):
        if "unsupported" in value:
            return []
        return [p for k, v in value.items() if k not in counts for p in plain_numbers(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in plain_numbers(v, f"{path}[{i}]")]
    return [path] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_no_plain_number_where_the_target_is_unsupported() -> None:
    import json

    from factory.evaluate.ledger import build_ledger
    from factory.evaluate.operational import cross_group_fmr, report_lines

    # Group a: 400 impostors, group b: 40. FMR 1e-2 (300 needed) is backed overall and in a, not in b; FMR 1e-3 is
    # backed nowhere. The JSON goes through a file, as the manifest does.
    rng = np.random.default_rng(3)
    per_group = {"a": 800, "b": 80}
    issame = np.concatenate([np.tile([True, False], n // 2) for n in per_group.values()])
    groups = np.repeat([0, 1], list(per_group.values()))
    emb = rng.normal(size=(2 * len(issame), 16))
    emb[1::2][issame] = emb[0::2][issame] + 1.2 * rng.normal(size=(issame.sum(), 16))
    bench = PairBenchmark(np.zeros((len(emb), 3, 2, 2), np.uint8), issame, groups, np.arange(len(emb)), ("a", "b"))
    evaluation = evaluate_embeddings(emb, bench, targets=(1e-2, 1e-3), replicates=20).to_dict()
    scores = 1.0 - pair_distances(emb) / 2.0
    evaluation["cross_group_fmr"] = cross_group_fmr(
        scores[~issame], groups[~issame], rng.uniform(-0.3, 0.3, 100), np.tile([0, 1], (100, 1)), n_groups=2
    )
    evaluation = json.loads(json.dumps(evaluation))
    operational = evaluation["operational"]

    assert not operational["1e-03"]["supported"] and plain_numbers(operational["1e-03"]) == []
    backed = operational["1e-02"]
    assert backed["supported"] and not backed["groups"]["b"]["fmr_supported"]
    assert sorted(plain_numbers(backed)) == sorted(
        [".threshold", ".fmr", ".summary.fnmr_max_geomean", ".summary.fnmr_max_min"]
        + [f".groups.a.{k}" for k in ("fmr", "fnmr", "fmr_ci[0]", "fmr_ci[1]", "fnmr_ci[0]", "fnmr_ci[1]")]
        + [".groups.b.fnmr", ".groups.b.fnmr_ci[0]", ".groups.b.fnmr_ci[1]"]
    )  # group b's FMR, its interval and every FMR-based summary are marked; nothing else is
    cross = evaluation["cross_group_fmr"]  # same-group cells of 400 and 40 pairs, the cross cell of 100
    assert plain_numbers(cross) == [".threshold", ".matrix[0][0]"]

    validation = {"artifacts": {"m": {"evaluation": evaluation}}, "order": ["m"], "groups": ["a", "b"]}
    (row,) = build_ledger(validation, target="1e-03")
    assert plain_numbers(row["fmr"]) == plain_numbers(row["fnmr"]) == [] and len(row["fmr"]) == 2
    (row,) = build_ledger(validation, target="1e-02")
    assert plain_numbers(row["fmr"]) == [".a"] and plain_numbers(row["fnmr"]) == [".a", ".b"]
    (line,) = report_lines(validation, "1e-03")  # the release report's lines show the mark, not the estimate alone
    assert line.startswith("- m: FMR 1e-03: threshold n/s (est ") and "(unsupported: rule of 3: 440 impostor" in line


def test_unsupported_figures_are_drawn_and_printed_as_such(tmp_path) -> None:
    from factory.evaluate.operational import cross_group_fmr, format_operational, operational_fairness
    from factory.evaluate.plots import fmr_heatmap, score_histograms

    scores, issame, groups, subjects = golden_operational_pairs()
    result = operational_fairness(scores, issame, groups, ["a", "b"], subjects, targets=(0.1, 1e-2), replicates=0)
    supported, unsupported = format_operational("1e-01", result["1e-01"]), format_operational("1e-02", result["1e-02"])
    assert supported.startswith("FMR 1e-01: threshold 0.3600; a FMR 0.075 FNMR 0.200, b FMR n/s (est 0.2) FNMR 0.100")
    assert "FMR of b unsupported" in supported and "rule of 3" in supported
    assert unsupported.startswith("FMR 1e-02: threshold n/s (est 0.9700); a FMR n/s (est 0) FNMR n/s (est 1.000)")
    assert unsupported.endswith(
        "(unsupported: rule of 3: 50 impostor pairs, which support FMR >= 6.0e-02 at best, not 1e-02 (needs 300))"
    )
    for threshold in (result["1e-01"]["threshold"], result["1e-02"]["threshold"]):
        score_histograms(scores, issame, groups, ["a", "b"], tmp_path / "h.png", threshold)
    mixed = cross_group_fmr(np.zeros(200), np.repeat([0, 1], 100), np.zeros(100), np.tile([0, 1], (100, 1)), 2, 3e-2)
    mixed["matrix"][0][1] = mixed["matrix"][1][0] = {"unsupported": "rule of 3: test", "estimate": 0.5}
    none = cross_group_fmr(np.zeros(200), np.repeat([0, 1], 100), np.zeros(100), np.tile([0, 1], (100, 1)), 2, 1e-3)
    for heat in (mixed, none):  # partly and wholly unsupported: no colour scale to build from in the second
        assert fmr_heatmap(heat, ["a", "b"], tmp_path / "f.png").stat().st_size > 0


def loop_tar_at_far(dist: np.ndarray, issame: np.ndarray, target: float) -> tuple[float, float, float]:
    """insightface's calculate_val written plainly (np.interp in place of the crashing scipy interp1d)."""
    folds = np.array_split(np.arange(len(dist)), 10)
    tars, fars = [], []
    for test in folds:
        train = np.setdiff1d(np.arange(len(dist)), test)
        far_train = np.array([np.mean(dist[train][~issame[train]] < t) for t in VAL_THRESHOLDS])
        threshold = np.interp(target, far_train, VAL_THRESHOLDS) if far_train.max() >= target else 0.0
        accept = dist[test] < threshold
        tars.append(accept[issame[test]].mean())
        fars.append(accept[~issame[test]].mean())
    return float(np.mean(tars)), float(np.std(tars)), float(np.mean(fars))


@pytest.mark.parametrize("target", [1e-3, 1e-2, 0.1])
def test_tar_at_far_equals_the_plain_loop(target: float) -> None:
    from factory.evaluate.verification import tar_at_far

    rng = np.random.default_rng(1)
    issame = np.tile([True, False], 300)
    dist = np.where(issame, rng.normal(0.9, 0.3, 600), rng.normal(1.7, 0.25, 600)).clip(0, 3.99)
    got = tar_at_far(dist, issame, target)
    tar, tar_std, far = loop_tar_at_far(dist, issame, target)
    assert (got["tar"], got["tar_std"], got["far"]) == pytest.approx((tar, tar_std, far), abs=1e-12)


def test_cross_group_fmr_matrix_golden() -> None:
    from factory.evaluate.operational import cross_group_fmr

    # 100 same-group impostors per group (groups 0, 1) and 100 cross pairs (0, 1); threshold for FMR 1e-2 over all
    # 300 is just above the 4th highest score: the three highest impostors are accepted. 300 pairs back the threshold
    # (rule of 3), but no cell of 100 backs its own FMR 1e-2: every cell is marked, its estimate kept.
    same = np.r_[np.linspace(0, 0.5, 100), np.linspace(0, 0.5, 100)]
    same_cells = np.repeat([0, 1], 100)
    cross = np.r_[np.linspace(0, 0.5, 97), [0.9, 0.95, 0.99]]
    result = cross_group_fmr(same, same_cells, cross, np.tile([0, 1], (100, 1)), n_groups=2, target=1e-2)
    assert result["supported"] and 0.5 < result["threshold"] < 0.9
    m = result["matrix"]
    assert m[0][1] == m[1][0] == {"unsupported": UNSUPPORTED_CELL, "estimate": pytest.approx(0.03)}
    assert m[0][0]["estimate"] == m[1][1]["estimate"] == 0.0 and "cell (0, 0) has 100" in m[0][0]["unsupported"]
    assert result["pairs"] == [[100, 100], [100, 100]]


UNSUPPORTED_CELL = (
    "rule of 3: cell (0, 1) has 100 impostor pairs, which support FMR >= 3.0e-02 at best, not 1e-02 (needs 300)"
)


def test_cross_group_fmr_cells_backed_by_their_pairs_are_numbers() -> None:
    from factory.evaluate.operational import cross_group_fmr

    # Same scores as above but all same-group impostors at 0: at FMR 3e-2 (100 pairs needed) every cell is backed;
    # 9 false matches are allowed over 300, only the 3 high cross pairs lie above 0.
    same, same_cells = np.zeros(200), np.repeat([0, 1], 100)
    cross = np.r_[np.zeros(97), [0.9, 0.95, 0.99]]
    result = cross_group_fmr(same, same_cells, cross, np.tile([0, 1], (100, 1)), n_groups=2, target=3e-2)
    assert result["supported"] and 0 < result["threshold"] < 1e-300
    assert result["matrix"] == [[0.0, pytest.approx(0.03)], [pytest.approx(0.03), 0.0]]
    # Too few pairs overall for FMR 1e-3 (300 < 3000): the threshold and every cell are marked, for that reason.
    coarse = cross_group_fmr(same, same_cells, cross, np.tile([0, 1], (100, 1)), n_groups=2, target=1e-3)
    assert not coarse["supported"] and coarse["threshold"]["unsupported"].startswith("rule of 3: 300 impostor pairs")
    assert all(cell["unsupported"] == coarse["threshold"]["unsupported"] for row in coarse["matrix"] for cell in row)


def test_intervals_show_as_plus_minus_only_when_near_symmetric() -> None:
    from factory.evaluate.tables import percent_interval

    assert percent_interval(0.8862, [0.8752, 0.8972]) == "88.62 ±1.10"
    assert percent_interval(0.5, [0.5, 0.5]) == "50.00 ±0.00"
    # one side 1.98x the other (a bias-corrected interval): the half-width would hide where the uncertainty is
    assert percent_interval(0.8630, [0.8510, 0.8691]) == "86.30 [85.10, 86.91]"
    assert percent_interval(0.5, [0.5, 0.52]) == "50.00 [50.00, 52.00]"
    assert percent_interval(0.0345, [0.0231, 0.0492], "brackets") == "3.45 [2.31, 4.92]"
    assert percent_interval(0.9, None) == "90.00"
