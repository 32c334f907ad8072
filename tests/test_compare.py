"""`factory compare A B`: two runs or releases side by side, paired where they share a benchmark.

Every side is written here in the formats the build writes (a validate stage's metrics.json, pair_distances.npz and
stage.json; a data stage's benchmark.npz; a release's manifest.json), from synthetic embeddings: no build runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from factory.cli import main
from factory.data.benchmark import PairBenchmark
from factory.evaluate.benchmark_eval import BenchmarkResult, compare_results, evaluate_embeddings, resample_benchmark
from factory.evaluate.compare import CompareInputError, compare_paths, format_comparison
from factory.evaluate.verification import pair_distances
from factory.files import sha256_file, write_json
from factory.runtime.manifest import LABELS_FILE, MANIFEST_FORMAT

GROUPS = ("north", "south")
REPLICATES = 200


def labels(n_per_group: int = 200, seed: int = 0) -> PairBenchmark:
    """A benchmark without images: per fold half genuine, half impostor; identity j in genuine and impostor pair j."""
    half = n_per_group // 20
    issame = np.tile(np.r_[np.ones(half, bool), np.zeros(half, bool)], 10 * len(GROUPS))
    subjects = np.tile(np.arange(half), 2 * 10 * len(GROUPS)) + np.repeat(np.arange(10 * len(GROUPS)), 2 * half) * half
    return PairBenchmark(
        images=np.zeros((2 * len(issame), 0, 0, 0), np.uint8),
        issame=issame,
        groups=np.repeat(np.arange(len(GROUPS)), n_per_group),
        subjects=np.repeat(subjects + 1000 * seed, 2),
        group_names=GROUPS,
    )


def embeddings(bench: PairBenchmark, noise: tuple[float, float], seed: int) -> np.ndarray:
    """float32 pair embeddings (as the runtimes give them): genuine pairs closer, per-group noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(len(bench.issame), 32))
    other = rng.normal(size=(len(bench.issame), 32))
    second = np.where(bench.issame[:, None], base, other)
    second = second + np.asarray(noise)[bench.groups][:, None] * rng.normal(size=base.shape)
    return np.stack([base, second], axis=1).reshape(-1, 32).astype(np.float32)


def entry(result: BenchmarkResult, median_ms: float) -> dict[str, Any]:
    """An artifact's validation entry, as the validate stage writes it."""
    latency = {"batch": 1, "median_ms": median_ms, "median_ci": [median_ms - 0.1, median_ms + 0.2]}
    return {"evaluation": result.to_dict(), "latency": latency}


def write_run(run: Path, bench: PairBenchmark, artifacts: dict[str, np.ndarray], ms: dict[str, float]) -> dict:
    """runs/NAME with a data stage, a validate stage and no release; returns the evaluations by name."""
    data = run / "stages" / "data" / "d0"
    data.mkdir(parents=True)
    bench.save(data / "benchmark.npz")
    write_json(data / "stage.json", {"files": {"benchmark.npz": sha256_file(data / "benchmark.npz")}, "metrics": {}})
    draws = resample_benchmark(bench, REPLICATES)
    results = {name: evaluate_embeddings(emb, bench, resampling=draws) for name, emb in artifacts.items()}
    validate = run / "stages" / "validate" / "v0"
    validate.mkdir(parents=True)
    metrics = {
        "artifacts": {name: entry(r, ms[name]) for name, r in results.items()},
        "order": list(results),
        "groups": list(GROUPS),
        "pairs": len(bench.issame),
        "comparisons": {},
    }
    write_json(validate / "metrics.json", metrics)
    np.savez(validate / "pair_distances.npz", **{n: pair_distances(e) for n, e in artifacts.items()})
    write_json(validate / "stage.json", {"upstream_keys": {"data": "d0"}, "files": {}, "metrics": {}})
    return results


def artifact_record(name: str, parent: str | None) -> dict[str, Any]:
    return {"name": name, "files": [f"{name}.onnx"], "runtime": "onnxruntime", "derived_from": parent}


def write_release(
    release: Path,
    entries: dict[str, dict[str, Any]],
    benchmark_sha: str | None,
    distances: dict[str, np.ndarray] | None = None,
    targets: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
) -> Path:
    """A release directory: ``teacher`` as the reference, the rest shipped (in order, each from the one before).

    ``benchmark_sha`` goes into ``benchmark`` (with ``distances``, as releases carry them now) or, with no distances,
    into the lineage only (as in releases made before they were shipped).
    """
    release.mkdir(parents=True)
    shipped, parent = {}, "teacher"
    for name, e in entries.items():
        if name != "teacher":
            shipped[name] = {**artifact_record(name, parent), "golden_min_cosine": 0.99, "metrics": e}
            parent = name
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": "toy",
        "version": "1.0.0",
        "description": "",
        "files": {},
        "contract": {},
        "artifacts": shipped,
        "reference": {"teacher": entries["teacher"]} if "teacher" in entries else {},
        "gates": [],
        "fairness_ledger": [],
        "golden": {"input": "golden_input.npy", "image": "golden_input.png", "embeddings": {}},
        "lineage": {"stages": {"data": {"key": "d0", "files": {"benchmark.npz": benchmark_sha}}, **(lineage or {})}},
        "targets": targets or {},
        "benchmark": {"sha256": benchmark_sha, "pairs": 400, "groups": list(GROUPS)},
        "thresholds": {"score": "cosine", "artifacts": {}},
        "licences": {"commercial_use": False, "model_licence": "other", "inputs": {}},
        "signature": None,
    }
    if distances is not None:
        manifest["benchmark"]["distances"] = "pair_distances.npz"
        np.savez(release / "pair_distances.npz", **distances)
    write_json(release / "manifest.json", manifest)
    return release


def hand_entry(north: float, south: float, ms: float | None) -> dict[str, Any]:
    """A validation entry with round numbers (for golden changes)."""
    mean, std = (north + south) / 2, abs(north - south) / np.sqrt(2)
    out = {
        "evaluation": {
            "groups": {
                "north": {"accuracy_mean": north, "ci": [north - 0.02, north + 0.02]},
                "south": {"accuracy_mean": south, "ci": [south - 0.03, south + 0.01]},
            },
            "fairness": {
                "mean": mean,
                "std": std,
                "ser": (1 - min(north, south)) / (1 - max(north, south)),
                "ci": {"mean": [mean - 0.01, mean + 0.01], "std": [0.0, std + 0.02], "ser": [1.0, 3.0]},
            },
            "uncertainty": {"level": 0.95, "replicates": REPLICATES, "seed": 0, "unit": "subject"},
        }
    }
    if ms is not None:
        out["latency"] = {"median_ms": ms, "median_ci": [ms - 0.1, ms + 0.1]}
    return out


def on_target(accuracy: float, ms: float) -> dict[str, Any]:
    return {"accuracy_mean": accuracy, "latency_by_batch": {"1": {"median_ms": ms, "median_ci": [ms - 1, ms + 1]}}}


def test_changes_per_group_artifact_and_target_are_b_minus_a(tmp_path: Path) -> None:
    a = write_release(
        tmp_path / "a",
        {"teacher": hand_entry(0.90, 0.80, None), "int8": hand_entry(0.80, 0.70, 2.0), "old": hand_entry(0.5, 0.5, 1)},
        "1" * 64,
        targets={"cpu": {"artifacts": {"int8": on_target(0.75, 4.0)}}},
    )
    b = write_release(
        tmp_path / "b",
        {"teacher": hand_entry(0.90, 0.80, None), "int8": hand_entry(0.85, 0.68, 3.0), "new": hand_entry(0.6, 0.6, 1)},
        "2" * 64,
        targets={
            "cpu": {"artifacts": {"int8": on_target(0.70, 5.5)}},
            "gpu": {"artifacts": {"int8": on_target(0.8, 1)}},
        },
    )
    result = compare_paths(a, b)
    assert result["order"] == ["teacher", "int8"]
    assert result["only_in"] == {"a": ["old"], "b": ["new"]}
    int8 = result["artifacts"]["int8"]
    assert int8["groups"]["north"]["change"] == pytest.approx(0.05)
    assert int8["groups"]["south"]["change"] == pytest.approx(-0.02)
    assert int8["groups"]["north"]["a"] == {"value": 0.80, "ci": [pytest.approx(0.78), pytest.approx(0.82)]}
    assert int8["mean"]["change"] == pytest.approx(0.015)
    assert int8["std"]["change"] == pytest.approx((0.17 - 0.10) / np.sqrt(2))
    assert int8["ser"]["change"] == pytest.approx(0.32 / 0.15 - 1.5)
    assert int8["latency"]["change_ms"] == pytest.approx(1.0) and int8["latency"]["ratio"] == pytest.approx(1.5)
    assert result["artifacts"]["teacher"]["latency"]["change_ms"] is None  # a reference is not timed
    cpu = result["targets"]["cpu"]["artifacts"]["int8"]
    assert cpu["change_ms"] == pytest.approx(1.5) and cpu["change_accuracy"] == pytest.approx(-0.05)
    assert result["targets"]["gpu"]["in"] == ["b"] and result["targets"]["gpu"]["artifacts"]["int8"]["a"] is None
    # different benchmarks: no paired test, and the reason instead of a silent gap
    assert not result["pairing"]["possible"]
    assert "different benchmarks (A 111111111111…, B 222222222222…)" in result["pairing"]["reason"]
    assert int8["paired"] is None and int8["no_paired_test"] == result["pairing"]["reason"]

    text = format_comparison(result)
    assert "no paired test: different benchmarks" in text
    assert "only in A: old; only in B: new" in text
    assert "paired change" not in text
    row = next(line for line in text.splitlines() if line.startswith("  north") and "85.00" in line)
    assert row.split()[1:] == ["80.00", "±2.00", "85.00", "±2.00", "+5.00"]
    cpu_row = next(line for line in text.splitlines() if line.startswith("cpu "))
    assert cpu_row.split()[-3:] == ["75.00", "70.00", "-5.00"] and "+1.50" in cpu_row
    assert "gpu (only B)" in text


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run A (a validate stage) and release B (with pair distances) of the same benchmark; B's int8 is worse."""
    root = tmp_path_factory.mktemp("shared")
    bench = labels()
    embs_a = {"teacher": embeddings(bench, (1.0, 1.0), 0), "int8": embeddings(bench, (1.6, 1.6), 1)}
    embs_b = {"teacher": embeddings(bench, (1.0, 1.0), 0), "int8": embeddings(bench, (1.6, 2.2), 1)}
    results_a = write_run(root / "run_a", bench, embs_a, {"teacher": 9.0, "int8": 2.0})
    draws = resample_benchmark(bench, REPLICATES)
    results_b = {name: evaluate_embeddings(e, bench, resampling=draws) for name, e in embs_b.items()}
    sha = sha256_file(root / "run_a" / "stages" / "data" / "d0" / "benchmark.npz")
    entries_b = {"teacher": entry(results_b["teacher"], 9.0), "int8": entry(results_b["int8"], 2.5)}
    distances_b = {n: pair_distances(e) for n, e in embs_b.items()}
    write_release(root / "release_b", entries_b, sha, distances_b)
    return {"root": root, "a": results_a, "b": results_b, "sha": sha, "entries_b": entries_b, "dist_b": distances_b}


def test_paired_test_equals_the_validate_stages_comparison(shared: dict[str, Any]) -> None:
    root = shared["root"]
    result = compare_paths(root / "run_a", root / "release_b")
    pairing = result["pairing"]
    assert pairing["possible"] and pairing["benchmark_sha256"] == shared["sha"]
    assert pairing["labels"] == str(root / "run_a" / "stages" / "data" / "d0" / "benchmark.npz")
    assert pairing["uncertainty"] == {"level": 0.95, "replicates": REPLICATES, "seed": 0}
    for name in ("teacher", "int8"):
        expected = compare_results(shared["b"][name], shared["a"][name], "A")
        assert result["artifacts"][name]["paired"] == expected
    int8 = result["artifacts"]["int8"]["paired"]
    # the same people and captures, south made noisier in B: a real drop there, none in north
    assert int8["groups"]["south"]["ci"][1] < 0 and int8["groups"]["south"]["mcnemar"]["p_value"] < 0.01
    assert int8["groups"]["north"]["delta"] == 0.0 and int8["groups"]["north"]["mcnemar"]["p_value"] == 1.0
    text = format_comparison(result)
    p = int8["groups"]["south"]["mcnemar"]["p_value"]
    south = [line for line in text.splitlines() if line.startswith("  south")][1]  # teacher's row, then int8's
    assert f"{100 * int8['groups']['south']['delta']:+.2f} [" in south and south.endswith(f"{p:.2g}")
    json.dumps(result)  # JSON-ready as it is


def test_no_paired_test_without_distances_or_labels_says_why(shared: dict[str, Any], tmp_path: Path) -> None:
    root = shared["root"]
    old = write_release(tmp_path / "old", shared["entries_b"], shared["sha"])  # sha in the lineage only
    result = compare_paths(root / "run_a", old)
    assert not result["pairing"]["possible"]
    assert "the benchmark is shared, but B lacks pair distances" in result["pairing"]["reason"]
    assert "no pair_distances.npz" in result["pairing"]["reason"]
    assert result["pairing"]["reason"] in format_comparison(result)
    # two releases, each with distances, neither in a run directory: the labels must be named
    again = compare_paths(root / "release_b", root / "release_b")
    assert "pass that benchmark.npz with --benchmark" in again["pairing"]["reason"]
    named = compare_paths(root / "release_b", root / "release_b", root / "run_a" / "stages/data/d0/benchmark.npz")
    assert named["pairing"]["possible"]
    assert named["artifacts"]["int8"]["paired"]["mean"] == {"delta": 0.0, "ci": [0.0, 0.0]}
    with pytest.raises(CompareInputError, match="expected the shared benchmark"):
        compare_paths(root / "release_b", root / "release_b", old / "manifest.json")


def test_distances_that_do_not_match_the_metrics_are_not_paired(shared: dict[str, Any], tmp_path: Path) -> None:
    root = shared["root"]
    swapped = {"teacher": shared["dist_b"]["int8"], "int8": shared["dist_b"]["teacher"]}
    release = write_release(tmp_path / "swapped", shared["entries_b"], shared["sha"], swapped)
    result = compare_paths(root / "run_a", release)
    assert result["pairing"]["possible"]
    assert "not of one validation" in result["artifacts"]["int8"]["no_paired_test"]
    assert result["artifacts"]["int8"]["paired"] is None
    assert "not paired (below)" in format_comparison(result)


def test_a_release_in_its_run_directory_pairs_with_the_stages_its_lineage_names(
    shared: dict[str, Any], tmp_path: Path
) -> None:
    """An older release (no pair_distances.npz, no benchmark key) inside runs/NAME, reached through its link."""
    run = tmp_path / "run"
    bench = labels()
    embs = {"teacher": embeddings(bench, (1.0, 1.0), 0), "int8": embeddings(bench, (1.6, 2.2), 1)}
    results = write_run(run, bench, embs, {"teacher": 9.0, "int8": 2.5})
    validate = run / "stages" / "validate" / "v0"
    recorded = {
        "validate": {"key": "v0", "files": {"pair_distances.npz": sha256_file(validate / "pair_distances.npz")}}
    }
    entries = {name: entry(r, 2.5) for name, r in results.items()}
    write_release(run / "stages" / "release" / "r0", entries, shared["sha"], lineage=recorded)
    (run / "release").symlink_to("stages/release/r0")
    result = compare_paths(shared["root"] / "run_a", run)
    assert result["b"]["origin"] == str(run / "stages" / "release" / "r0" / "manifest.json")
    assert result["b"]["distances"] == str(validate / "pair_distances.npz")
    assert result["pairing"]["possible"]
    assert result["artifacts"]["int8"]["paired"] == compare_results(results["int8"], shared["a"]["int8"], "A")
    # a validate stage whose distances changed since the release recorded them is not used
    np.savez(validate / "pair_distances.npz", **{n: pair_distances(e) for n, e in reversed(embs.items())})
    again = compare_paths(shared["root"] / "run_a", run / "release")
    assert "B lacks pair distances" in again["pairing"]["reason"]


def test_cli_prints_the_tables_and_writes_json(shared: dict[str, Any], tmp_path: Path) -> None:
    root = shared["root"]
    out = tmp_path / "compare.json"
    done = CliRunner().invoke(main, ["compare", str(root / "run_a"), str(root / "release_b"), "--json", str(out)])
    assert done.exit_code == 0, done.output
    assert "artifact / measure" in done.output and "paired change [95%]" in done.output
    assert "batch-1 latency on the build machine" in done.output
    written = json.loads(out.read_text())
    assert written["format"] == "factory.compare/1" and written["order"] == ["teacher", "int8"]


def missing(tmp: Path) -> Path:
    return tmp / "missing"


def empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def corrupt_manifest(tmp: Path) -> Path:
    (tmp / "r").mkdir()
    (tmp / "r" / "manifest.json").write_text("{not json")
    return tmp / "r"


def release_without_metrics(tmp: Path) -> Path:
    release = write_release(tmp / "rel", {"teacher": hand_entry(0.9, 0.8, None)}, "0" * 64)
    manifest = json.loads((release / "manifest.json").read_text())
    manifest["reference"]["teacher"] = {"latency": {}}
    (release / "manifest.json").write_text(json.dumps(manifest))
    return release


def run_without_validate(tmp: Path) -> Path:
    (tmp / "s" / "stages").mkdir(parents=True)
    return tmp / "s"


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (missing, ["missing: no such directory", "expected a run directory"]),
        (empty_dir, ["empty: a directory without manifest.json or stages/"]),
        (corrupt_manifest, ["manifest.json is not valid JSON"]),
        (release_without_metrics, ["reference.teacher is not a validation entry", "expected evaluation.groups"]),
        (run_without_validate, ["without a release or a finished validate stage", "stages/validate/KEY/metrics.json"]),
    ],
    ids=["missing", "empty-dir", "corrupt-manifest", "release-without-metrics", "run-without-validate"],
)
def test_bad_path_is_one_line_and_exit_2(shared: dict[str, Any], tmp_path: Path, make: Any, names: list[str]) -> None:
    bad = make(tmp_path)
    done = CliRunner().invoke(main, ["compare", str(shared["root"] / "run_a"), str(bad)])
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output and len(done.stderr.strip().splitlines()) == 1
    for name in names:
        assert name in done.stderr
    assert str(bad) in done.stderr


def test_releases_that_ship_their_labels_pair_on_their_own(shared: dict[str, Any], tmp_path: Path) -> None:
    """A release carries benchmark_labels.npz (labels, groups, subjects; no images), listed in its manifest."""
    root = shared["root"]
    release = write_release(tmp_path / "b", shared["entries_b"], shared["sha"], shared["dist_b"])
    PairBenchmark.save_labels(root / "run_a" / "stages" / "data" / "d0" / "benchmark.npz", release / LABELS_FILE)
    with np.load(release / LABELS_FILE) as shipped:
        assert "images" not in shipped.files and set(shipped.files) == {"issame", "groups", "subjects", "group_names"}
    manifest = json.loads((release / "manifest.json").read_text())
    manifest["benchmark"]["labels"] = LABELS_FILE
    write_json(release / "manifest.json", manifest)
    result = compare_paths(release, root / "release_b")
    assert result["pairing"]["possible"] and result["pairing"]["labels"] == str(release / LABELS_FILE)
    assert result["artifacts"]["int8"]["paired"]["mean"] == {"delta": 0.0, "ci": [0.0, 0.0]}
