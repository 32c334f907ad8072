"""Two runs or releases side by side: per group, per artifact, per target; paired where they share a benchmark.

Each side is read from what a build leaves behind, never re-measured:

- a **release directory** (``manifest.json``): ``artifacts.<name>.metrics`` and ``reference.<name>`` hold the
  validate stage's entry of every artifact, ``targets`` what each deploy target measured, ``benchmark.sha256`` the
  benchmark it was validated on, ``pair_distances.npz`` the distance of every benchmark pair per artifact and
  ``benchmark_labels.npz`` the benchmark's labels (listed in the manifest, so vouched for by it). A release that
  lacks a file and sits in its run directory
  (``runs/NAME/stages/release/KEY``) also finds what it lacks in the stages its lineage names: the validate stage's
  ``pair_distances.npz`` (checked against the sha256 the lineage recorded) and the data stage's ``benchmark.npz``;
- a **run directory** (``runs/NAME``): its ``release`` link's bundle, as above; without one, its newest finished
  validate stage (``metrics.json``, ``pair_distances.npz``), the data stage that stage was built on (the benchmark's
  sha256 from its ``stage.json``) and the deploy stage built on the same upstream stages (``targets``).

Every change is **B minus A**. Accuracies, mean, STD and SER are each side's recorded figures with their own
intervals. When both sides were validated on the same benchmark file (same sha256) and hold the pair distances of
an artifact, the two are also compared **pair by pair**, exactly as the validate stage compares an artifact with its
parent (:func:`~factory.evaluate.benchmark_eval.compare_results`): the 10-fold protocol is re-run on each side's
distances with one shared set of subject draws (side A's bootstrap settings), giving a paired interval of every
change and McNemar's exact p-value per group on the pair decisions. That needs the benchmark's labels (genuine or
impostor, group and subject of every pair): a release ships them, a run directory has its data stage's
``benchmark.npz``, else ``labels=`` names one (checked against the sha256). When no
paired test is possible the result says why (different benchmarks, a side without pair distances, no labels), in
the JSON and in the text: never a silent omission.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from factory.data.formats.npz import read_npz
from factory.data.stage import BENCHMARK_FILE
from factory.evaluate.stage import DISTANCES_FILE, METRICS_FILE
from factory.evaluate.tables import _fixed_width, _p_value, artifact_order, percent_interval, signed_interval
from factory.evaluate.uncertainty import DEFAULT_LEVEL, DEFAULT_REPLICATES
from factory.files import read_json, sha256_file
from factory.pipeline.build import current_release
from factory.pipeline.stage import STAGE_FILE
from factory.runtime.manifest import LABELS_FILE, MANIFEST_FILE, read_manifest

COMPARE_FORMAT = "factory.compare/1"
# A side's pair distances must reproduce its recorded group accuracies this closely (they are the same float32
# distances the validate stage scored): anything more means the distances and the metrics are not of one run.
_REPRODUCE_TOLERANCE = 1e-9
_LABEL_ARRAYS = ("issame", "groups", "subjects", "group_names")


class CompareInputError(ValueError):
    """A path that is neither a run directory nor a release directory, or whose files are not what a build writes."""


@dataclass(frozen=True)
class Side:
    """One side of a comparison, as a build left it.

    Attributes:
        path: the path as given.
        kind: ``"run"`` (a run directory) or ``"release"`` (a release directory).
        origin: where the measurements were read: a manifest or a validate stage's ``metrics.json``.
        name: recipe name (the run directory's name when there is no manifest).
        version: release version; None for a validate stage.
        groups: benchmark groups in benchmark order.
        artifacts: the validate stage's entry (``evaluation``, ``latency``, ...) of every artifact, in build order.
        targets: what each deploy target measured (``{target: {"artifacts": {name: {...}}}}``).
        benchmark_sha256: sha256 of the ``benchmark.npz`` the artifacts were validated on; None when unknown.
        benchmark_note: why the benchmark is unknown (when it is).
        distances: ``pair_distances.npz`` of the artifacts, or None.
        distances_note: why there are no pair distances (when there are none).
        labels: a ``benchmark.npz`` this side's run directory holds (pair labels, groups, subjects), or the
            release's ``benchmark_labels.npz``; None when neither is at hand.
        labels_vouched: the labels are the release's own, listed with their sha256 in its manifest (which names the
            benchmark's sha256): they are the shared benchmark's without hashing its images.
        uncertainty: bootstrap settings of the validation (``level``, ``replicates``, ``seed``).
    """

    path: Path
    kind: str
    origin: Path
    name: str
    version: str | None
    groups: tuple[str, ...]
    artifacts: dict[str, dict[str, Any]]
    targets: dict[str, Any] = field(default_factory=dict)
    benchmark_sha256: str | None = None
    benchmark_note: str | None = None
    distances: Path | None = None
    distances_note: str | None = None
    labels: Path | None = None
    labels_vouched: bool = False
    uncertainty: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """What the comparison's JSON says about this side."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "origin": str(self.origin),
            "name": self.name,
            "version": self.version,
            "groups": list(self.groups),
            "benchmark_sha256": self.benchmark_sha256,
            "benchmark_note": self.benchmark_note,
            "distances": None if self.distances is None else str(self.distances),
            "distances_note": self.distances_note,
            "labels": None if self.labels is None else str(self.labels),
            "uncertainty": self.uncertainty,
        }


@dataclass(frozen=True)
class Labels:
    """What pairing needs of a benchmark beyond the distances: its labels, groups and subjects (no images)."""

    path: Path
    issame: np.ndarray
    groups: np.ndarray
    subjects: np.ndarray
    group_names: tuple[str, ...]


def load_side(path: str | os.PathLike[str]) -> Side:
    """Read one side: a release directory (``manifest.json``) or a run directory (``stages/``, ``release`` link).

    Raises:
        CompareInputError: ``path`` is neither, or a file in it is not what a build writes (names the file and what
            was expected).
        FileNotFoundError, ManifestError: from :func:`~factory.runtime.manifest.read_manifest`.
    """
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return _release_side(path, path, "release")
    if path.is_dir() and ((path / "stages").is_dir() or (path / "release").is_symlink()):
        release = current_release(path)
        if release is not None and (release / MANIFEST_FILE).is_file():
            return _release_side(path, release, "run")
        return _validate_side(path)
    what = "a directory without manifest.json or stages/" if path.is_dir() else "no such directory"
    if path.is_file():
        what = "a file"
    raise CompareInputError(
        f"{path}: {what}; expected a run directory (runs/NAME, with stages/ and a release link) or a release "
        f"directory (with {MANIFEST_FILE})"
    )


def _release_side(path: Path, release: Path, kind: str) -> Side:
    manifest = read_manifest(release)
    source = release / MANIFEST_FILE
    artifacts: dict[str, dict[str, Any]] = {}
    for name, entry in _object(source, "reference", manifest["reference"]).items():
        artifacts[name] = _validation_entry(source, f"reference.{name}", entry)
    shipped = manifest["artifacts"]
    for name in _build_order(shipped):
        entry = _object(source, f"artifacts.{name}", shipped[name])
        artifacts[name] = _validation_entry(source, f"artifacts.{name}.metrics", entry.get("metrics"))
    lineage = manifest["lineage"].get("stages")
    lineage = lineage if isinstance(lineage, dict) else {}
    # In its run directory (runs/NAME/stages/release/KEY) a release sits beside the stages its lineage names.
    here = release.resolve()
    stages = here.parent.parent if here.parent.name == "release" and here.parent.parent.name == "stages" else None

    benchmark = manifest.get("benchmark")
    sha, note, groups = None, None, None
    if isinstance(benchmark, dict) and isinstance(benchmark.get("sha256"), str):
        sha, groups = benchmark["sha256"], benchmark.get("groups")
    else:
        sha = _recorded(lineage, "data", BENCHMARK_FILE)
        if sha is None:
            note = f"{source} has no benchmark.sha256 and its lineage records no data stage {BENCHMARK_FILE}"
    # JSON keys come back sorted: the validate stage's metrics (when at hand) give build and benchmark order.
    hint = _stage_file(stages, lineage, "validate", METRICS_FILE, check=False)
    hint_metrics = read_json(hint) if hint is not None else {}
    hint_metrics = hint_metrics if isinstance(hint_metrics, dict) else {}
    order = [n for n in hint_metrics.get("order") or () if n in artifacts]
    artifacts = {n: artifacts[n] for n in [*order, *(n for n in artifacts if n not in order)]}
    if not (isinstance(groups, list) and groups):
        groups = hint_metrics.get("groups")
    if not (isinstance(groups, list) and groups):
        groups = list(next(iter(artifacts.values()))["evaluation"]["groups"]) if artifacts else []
    _check_groups(source, artifacts, groups)

    distances, distances_note = release / DISTANCES_FILE, None
    if not distances.is_file():
        distances = _stage_file(stages, lineage, "validate", DISTANCES_FILE)
        if distances is None:
            distances_note = f"{release} carries no {DISTANCES_FILE}, made before releases shipped them" + (
                "" if stages is None else ", and its run directory no longer holds its validate stage's"
            )
    shipped_labels = release / str((benchmark or {}).get("labels") or LABELS_FILE)
    vouched = shipped_labels.is_file()
    labels = shipped_labels if vouched else _stage_file(stages, lineage, "data", BENCHMARK_FILE, check=False)
    return Side(
        path=path,
        kind=kind,
        origin=source,
        name=str(manifest["name"]),
        version=str(manifest["version"]),
        groups=tuple(str(g) for g in groups),
        artifacts=artifacts,
        targets=_object(source, "targets", manifest.get("targets") or {}),
        benchmark_sha256=sha,
        benchmark_note=note,
        distances=distances,
        distances_note=distances_note,
        labels=labels,
        labels_vouched=vouched,
        uncertainty=_uncertainty(artifacts),
    )


def _validate_side(run_dir: Path) -> Side:
    stages = run_dir / "stages"
    validate = _newest(stages / "validate")
    if validate is None or not (validate / METRICS_FILE).is_file():
        raise CompareInputError(
            f"{run_dir}: a run directory without a release or a finished validate stage; expected "
            f"stages/validate/KEY/{METRICS_FILE} (build it first: factory build RECIPE --until validate)"
        )
    record = _object(validate / STAGE_FILE, "", read_json(validate / STAGE_FILE))
    source = validate / METRICS_FILE
    metrics = _object(source, "", read_json(source))
    try:
        artifacts = {
            name: _validation_entry(source, f"artifacts.{name}", metrics["artifacts"][name])
            for name in artifact_order(metrics)
        }
        groups = tuple(str(g) for g in metrics["groups"])
    except (KeyError, TypeError) as e:
        raise CompareInputError(f"{source}: missing {e} (expected the validate stage's metrics)") from None
    _check_groups(source, artifacts, groups)
    upstream = _object(validate / STAGE_FILE, "upstream_keys", record.get("upstream_keys") or {})
    sha, note, labels = None, None, None
    data = stages / "data" / str(upstream.get("data")) if "data" in upstream else None
    if data is not None and (data / STAGE_FILE).is_file():
        files = _object(data / STAGE_FILE, "", read_json(data / STAGE_FILE)).get("files")
        sha = files.get(BENCHMARK_FILE) if isinstance(files, dict) else None
        labels = data / BENCHMARK_FILE if (data / BENCHMARK_FILE).is_file() else None
    if sha is None:
        note = f"the data stage {validate} was built on is not in {stages / 'data'} (cleaned?)"
    distances, distances_note = validate / DISTANCES_FILE, None
    if not distances.is_file():
        distances, distances_note = None, f"{validate} has no {DISTANCES_FILE}, validated before they were kept"
    # The deploy stage measured the artifacts of the same upstream stages as this validate stage.
    deploy = _newest(stages / "deploy", lambda r: isinstance(r, dict) and r.get("upstream_keys") == upstream)
    targets = (read_json(deploy / STAGE_FILE).get("metrics") or {}).get("targets") or {} if deploy else {}
    targets = _object(deploy / STAGE_FILE, "metrics.targets", targets) if deploy else {}
    return Side(
        path=run_dir,
        kind="run",
        origin=source,
        name=run_dir.resolve().name,
        version=None,
        groups=groups,
        artifacts=artifacts,
        targets=targets,
        benchmark_sha256=sha,
        benchmark_note=note,
        distances=distances,
        distances_note=distances_note,
        labels=labels,
        uncertainty=_uncertainty(artifacts),
    )


def _newest(folder: Path, accept: Any = None) -> Path | None:
    """The most recently finished stage directory in ``folder`` (``stage.json`` is written last), or None."""
    if not folder.is_dir():
        return None
    done = [
        d for d in folder.iterdir() if d.is_dir() and not d.name.endswith(".partial") and (d / STAGE_FILE).is_file()
    ]
    if accept is not None:
        done = [d for d in done if accept(read_json(d / STAGE_FILE))]
    return max(done, key=lambda d: (d / STAGE_FILE).stat().st_mtime, default=None)


def _recorded(lineage: dict[str, Any], stage: str, file: str) -> str | None:
    entry = lineage.get(stage)
    files = entry.get("files") if isinstance(entry, dict) else None
    digest = files.get(file) if isinstance(files, dict) else None
    return digest if isinstance(digest, str) else None


def _stage_file(stages: Path | None, lineage: dict[str, Any], stage: str, file: str, check: bool = True) -> Path | None:
    """``file`` of the stage the lineage names, when the release sits in its run directory.

    With ``check``, only when its sha256 is the one the lineage recorded.
    """
    entry = lineage.get(stage)
    if stages is None or not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        return None
    path = stages / stage / entry["key"] / file
    if not path.is_file():
        return None
    if check and sha256_file(path) != _recorded(lineage, stage, file):
        return None
    return path


def _object(source: Path, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        where = f"{key} is" if key else "it holds"
        raise CompareInputError(f"{source}: {where} {type(value).__name__}, expected an object")
    return value


def _validation_entry(source: Path, key: str, entry: Any) -> dict[str, Any]:
    """An artifact's validation entry, checked for what the comparison reads."""
    evaluation = entry.get("evaluation") if isinstance(entry, dict) else None
    ok = isinstance(evaluation, dict) and isinstance(evaluation.get("groups"), dict)
    if not (ok and isinstance(evaluation.get("fairness"), dict) and "mean" in evaluation["fairness"]):
        raise CompareInputError(
            f"{source}: {key} is not a validation entry (expected evaluation.groups and evaluation.fairness)"
        )
    for name, group in evaluation["groups"].items():
        if not isinstance(group, dict) or not isinstance(group.get("accuracy_mean"), (int, float)):
            raise CompareInputError(f"{source}: {key}.evaluation.groups.{name} has no accuracy_mean (a number)")
    return entry


def _check_groups(source: Path, artifacts: dict[str, dict[str, Any]], groups: Sequence[str]) -> None:
    for name, entry in artifacts.items():
        missing = [g for g in groups if g not in entry["evaluation"]["groups"]]
        if missing:
            raise CompareInputError(
                f"{source}: {name} has no accuracy for group(s) {', '.join(map(str, missing))} of its benchmark "
                f"(expected every group of {', '.join(map(str, groups))})"
            )


def _build_order(shipped: dict[str, Any]) -> list[str]:
    """Shipped artifacts by how many conversions they are from one that is not shipped, then by name."""

    def depth(name: str) -> int:
        seen = set()
        while name in shipped and name not in seen:
            seen.add(name)
            parent = shipped[name].get("derived_from") if isinstance(shipped[name], dict) else None
            if parent is None:
                break
            name = parent
        return len(seen)

    return sorted(shipped, key=lambda n: (depth(n), n))


def _uncertainty(artifacts: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    for entry in artifacts.values():
        settings = entry["evaluation"].get("uncertainty")
        if isinstance(settings, dict):
            return settings
    return None


def read_labels(path: str | os.PathLike[str]) -> Labels:
    """The labels, groups and subjects of a ``benchmark.npz`` (its images are not needed and not read)."""
    path = Path(path)
    expected = f"a pair benchmark: arrays {', '.join(_LABEL_ARRAYS)}"
    try:
        # np.load reads members lazily: the labels without the (large) images; allow_pickle=False never unpickles.
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _LABEL_ARRAYS if k not in data.files]
            if missing:
                raise CompareInputError(f"{path}: missing arrays {missing} (expected {expected})")
            arrays = {k: data[k] for k in _LABEL_ARRAYS}
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, CompareInputError):
            raise
        raise CompareInputError(f"{path}: not readable as {expected} ({e})") from None
    labels = Labels(
        path=path,
        issame=arrays["issame"].astype(bool).reshape(-1),
        groups=arrays["groups"].astype(np.int64).reshape(-1),
        subjects=arrays["subjects"].reshape(-1),
        group_names=tuple(str(g) for g in arrays["group_names"]),
    )
    if labels.groups.shape != labels.issame.shape or len(labels.subjects) != 2 * len(labels.issame):
        raise CompareInputError(f"{path}: groups, issame and subjects disagree on the number of pairs")
    return labels


def compare_paths(
    a: str | os.PathLike[str], b: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Compare two runs or releases (B minus A); see :func:`compare_sides`.

    Args:
        a: a run directory or a release directory.
        b: the same.
        labels: the shared benchmark's ``benchmark.npz``, for when neither side's run directory holds it.
    """
    return compare_sides(load_side(a), load_side(b), labels)


def compare_sides(a: Side, b: Side, labels: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Everything two sides measured, side by side, as JSON-ready data (``format`` ``factory.compare/1``).

    Keys: ``a``/``b`` (where each side was read), ``groups`` (in both) and ``groups_only``, ``order`` (artifacts in
    both) and ``only_in``, ``pairing`` (whether paired tests were possible, why not, the draws used), ``artifacts``
    (per artifact: each group's accuracy on both sides and the change; mean, STD, SER likewise; batch-1 latency;
    ``paired`` as :func:`~factory.evaluate.benchmark_eval.compare_results` gives it, or None with
    ``no_paired_test`` saying why) and ``targets`` (per target in either side: per artifact its batch-1 latency
    and accuracy there on each side).

    Raises:
        CompareInputError: ``labels`` is not the shared benchmark, or a side's files disagree with it.
    """
    groups = [g for g in a.groups if g in b.groups]
    order = [n for n in a.artifacts if n in b.artifacts]
    artifacts = {name: _artifact_block(a.artifacts[name], b.artifacts[name], groups) for name in order}
    pairing = _pairing(a, b, labels)
    if pairing["possible"]:
        _pair(a, b, order, artifacts, pairing)
    else:
        for block in artifacts.values():
            block["no_paired_test"] = pairing["reason"]
    return {
        "format": COMPARE_FORMAT,
        "change": "B - A",
        "a": a.describe(),
        "b": b.describe(),
        "groups": groups,
        "groups_only": {
            "a": [g for g in a.groups if g not in b.groups],
            "b": [g for g in b.groups if g not in a.groups],
        },
        "order": order,
        "only_in": {
            "a": [n for n in a.artifacts if n not in b.artifacts],
            "b": [n for n in b.artifacts if n not in a.artifacts],
        },
        "pairing": pairing,
        "artifacts": artifacts,
        "targets": _targets(a.targets, b.targets),
    }


def _figure(value: Any, ci: Any) -> dict[str, Any]:
    return {"value": value, "ci": ci}


def _change(a: Any, b: Any) -> float | None:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (a, b))
    return float(b - a) if numbers else None


def _artifact_block(a: dict[str, Any], b: dict[str, Any], groups: Sequence[str]) -> dict[str, Any]:
    ea, eb = a["evaluation"], b["evaluation"]
    block: dict[str, Any] = {"groups": {}}
    for g in groups:
        ga, gb = ea["groups"][g], eb["groups"][g]
        block["groups"][g] = {
            "a": _figure(ga["accuracy_mean"], ga.get("ci")),
            "b": _figure(gb["accuracy_mean"], gb.get("ci")),
            "change": _change(ga["accuracy_mean"], gb["accuracy_mean"]),
        }
    fa, fb = ea["fairness"], eb["fairness"]
    ca, cb = fa.get("ci") or {}, fb.get("ci") or {}
    for key in ("mean", "std", "ser"):
        block[key] = {
            "a": _figure(fa.get(key), ca.get(key)),
            "b": _figure(fb.get(key), cb.get(key)),
            "change": _change(fa.get(key), fb.get(key)),
        }
    la, lb = _latency(a.get("latency")), _latency(b.get("latency"))
    change = _change(*(x and x["median_ms"] for x in (la, lb)))
    block["latency"] = {
        "a": la,
        "b": lb,
        "change_ms": change,
        "ratio": lb["median_ms"] / la["median_ms"] if change is not None and la["median_ms"] > 0 else None,
    }
    block["paired"], block["no_paired_test"] = None, None
    return block


def _latency(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(entry, dict) or "median_ms" not in entry:
        return None
    return {"median_ms": entry["median_ms"], "median_ci": entry.get("median_ci")}


def _pairing(a: Side, b: Side, labels: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Whether the two sides can be compared pair by pair, and if not, why (one line)."""
    out: dict[str, Any] = {"possible": False, "reason": None, "benchmark_sha256": None, "labels": None}
    unknown = [(n, s) for n, s in (("A", a), ("B", b)) if s.benchmark_sha256 is None]
    if unknown:
        out["reason"] = "no paired test: " + "; ".join(
            f"the benchmark of {n} is unknown ({s.benchmark_note})" for n, s in unknown
        )
        return out
    if a.benchmark_sha256 != b.benchmark_sha256:
        out["reason"] = (
            f"no paired test: different benchmarks (A {a.benchmark_sha256[:12]}…, B {b.benchmark_sha256[:12]}…): "
            "the two were measured on different pairs, so only their separate intervals compare them"
        )
        return out
    sha = a.benchmark_sha256
    out["benchmark_sha256"] = sha
    lacking = [(n, s) for n, s in (("A", a), ("B", b)) if s.distances is None]
    if lacking:
        out["reason"] = "no paired test: the benchmark is shared, but " + "; ".join(
            f"{n} lacks pair distances: {s.distances_note}" for n, s in lacking
        )
        return out
    if labels is not None:
        found = sha256_file(labels)
        if found != sha:
            raise CompareInputError(
                f"{labels}: sha256 {found[:12]}…, expected the shared benchmark's {sha[:12]}… (its benchmark.npz)"
            )
        candidates = [Path(labels)]
    else:
        sides = (a, b)
        candidates = [
            s.labels for s in sides if s.labels is not None and (s.labels_vouched or sha256_file(s.labels) == sha)
        ]
    if not candidates:
        out["reason"] = (
            f"no paired test: the benchmark is shared (sha256 {sha[:12]}…), but its labels ({BENCHMARK_FILE}) are in "
            "neither side's run directory; pass that benchmark.npz with --benchmark"
        )
        return out
    out["possible"], out["labels"] = True, str(candidates[0])
    settings = a.uncertainty or {}
    out["uncertainty"] = {
        "level": float(settings.get("level", DEFAULT_LEVEL)),
        "replicates": int(settings.get("replicates", DEFAULT_REPLICATES)),
        "seed": int(settings.get("seed", 0)),
    }
    other = {k: (b.uncertainty or {}).get(k) for k in out["uncertainty"]}
    if other != out["uncertainty"]:
        out["note"] = f"B was bootstrapped with {other}; both sides are paired with A's draws"
    return out


def _pair(a: Side, b: Side, order: list[str], artifacts: dict[str, Any], pairing: dict[str, Any]) -> None:
    """Fill every artifact's ``paired`` (or ``no_paired_test``): the validate stage's comparison, across sides."""
    from factory.evaluate.benchmark_eval import compare_results
    from factory.evaluate.uncertainty import resample_subjects

    labels = read_labels(pairing["labels"])
    settings = pairing["uncertainty"]
    # the draws resample_benchmark makes: subjects of each pair's first image, within its group
    draws = resample_subjects(
        labels.groups, labels.subjects[0::2], settings["replicates"], settings["level"], settings["seed"]
    )
    tables = {
        "A": read_npz(a.distances, "pair distances per artifact"),
        "B": read_npz(b.distances, "pair distances per artifact"),
    }
    for name in order:
        results, why = {}, None
        for label, side in (("A", a), ("B", b)):
            dist = tables[label].get(name)
            if dist is None:
                why = f"{label}'s {side.distances} has no distances for {name}"
            elif dist.shape != labels.issame.shape:
                pairs = labels.issame.size
                why = f"{label}'s {side.distances} has {dist.size} distances for {name}, the benchmark {pairs} pairs"
            else:
                result = _result_from_distances(dist, labels, draws)
                why = _reproduces(result, side.artifacts[name], label, side)
                results[label] = result
            if why:
                break
        if why:
            artifacts[name]["no_paired_test"] = f"no paired test: {why}"
            continue
        artifacts[name]["paired"] = compare_results(results["B"], results["A"], "A")


def _result_from_distances(dist: np.ndarray, labels: Labels, draws: Any) -> Any:
    """What :func:`~factory.evaluate.benchmark_eval.evaluate_embeddings` computes per group, from the distances."""
    from factory.evaluate.benchmark_eval import BenchmarkResult
    from factory.evaluate.fairness import summarize_groups
    from factory.evaluate.uncertainty import protocol_replicates
    from factory.evaluate.verification import correct_decisions, verify_distances

    groups, replicates, correct = {}, {}, {}
    for index, name in enumerate(labels.group_names):
        pairs = np.flatnonzero(labels.groups == index)
        result = verify_distances(dist[pairs], labels.issame[pairs])
        groups[name] = result
        correct[name] = correct_decisions(dist[pairs], labels.issame[pairs], result)
        replicates[name] = protocol_replicates(dist[pairs], labels.issame[pairs], draws.counts, draws.clusters[pairs])
    return BenchmarkResult(
        groups,
        verify_distances(dist, labels.issame),
        summarize_groups({name: r.accuracy_mean for name, r in groups.items()}),
        tar_at_far={},  # not part of a paired comparison
        operational={},
        resampling=draws,
        group_replicates=replicates,
        group_correct=correct,
    )


def _reproduces(result: Any, entry: dict[str, Any], label: str, side: Side) -> str | None:
    """None when the distances give the side's recorded group accuracies, else why they cannot be paired."""
    recorded = entry["evaluation"]["groups"]
    for name, r in result.groups.items():
        if name not in recorded:
            return f"{label}'s metrics have no group {name!r} of the benchmark"
        if abs(r.accuracy_mean - recorded[name]["accuracy_mean"]) > _REPRODUCE_TOLERANCE:
            return (
                f"{label}'s {side.distances} give {name} "
                f"{100 * r.accuracy_mean:.2f}%, its metrics {100 * recorded[name]['accuracy_mean']:.2f}%: "
                "the distances and the metrics are not of one validation"
            )
    return None


def _targets(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target in dict.fromkeys([*a, *b]):
        ta, tb = (_target_artifacts(t.get(target)) for t in (a, b))
        rows = {}
        for name in dict.fromkeys([*ta, *tb]):
            ma, mb = _on_target(ta.get(name)), _on_target(tb.get(name))
            rows[name] = {
                "a": ma,
                "b": mb,
                "change_ms": _change(*(m and m.get("median_ms") for m in (ma, mb))),
                "change_accuracy": _change(*(m and m.get("accuracy_mean") for m in (ma, mb))),
            }
        out[target] = {"in": [s for s, t in (("a", a), ("b", b)) if target in t], "artifacts": rows}
    return out


def _target_artifacts(result: Any) -> dict[str, Any]:
    measured = result.get("artifacts") if isinstance(result, dict) else None
    return measured if isinstance(measured, dict) else {}


def _on_target(measured: dict[str, Any] | None) -> dict[str, Any] | None:
    """Batch-1 latency and accuracy of one artifact on one target (or the error it ran into)."""
    if not isinstance(measured, dict):
        return None
    if "error" in measured:
        return {"error": str(measured["error"])}
    batch1 = (measured.get("latency_by_batch") or {}).get("1") or {}
    return {
        "median_ms": batch1.get("median_ms"),
        "median_ci": batch1.get("median_ci"),
        "accuracy_mean": measured.get("accuracy_mean"),
    }


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as text: where each side came from, then accuracy and fairness, latency and target tables."""
    lines = [_side_line("A", result["a"]), _side_line("B", result["b"])]
    pairing = result["pairing"]
    if pairing["possible"]:
        u = pairing["uncertainty"]
        lines.append(
            f"paired: same benchmark (sha256 {pairing['benchmark_sha256'][:12]}…, labels {pairing['labels']}); "
            f"{u['replicates']} subject draws, seed {u['seed']}, shared by both sides"
        )
        if pairing.get("note"):
            lines.append(f"note: {pairing['note']}")
    else:
        lines.append(pairing["reason"])
    only = result["only_in"]
    lines.append(
        f"artifacts in both: {len(result['order'])}; only in A: {_names(only['a'])}; only in B: {_names(only['b'])}"
    )
    if any(result["groups_only"].values()):
        g = result["groups_only"]
        lines.append(f"groups only in A: {_names(g['a'])}; only in B: {_names(g['b'])}")
    if result["order"]:
        lines += ["", _accuracy_table(result)]
        unpaired = [
            f"  {n}: {block['no_paired_test']}"
            for n, block in result["artifacts"].items()
            if pairing["possible"] and block["no_paired_test"]
        ]
        lines += unpaired
        latency = _latency_table(result)
        if latency:
            lines += ["", "batch-1 latency on the build machine (median ms [interval])", latency]
    targets = _targets_table(result["targets"])
    if targets:
        lines += ["", "on the targets (batch-1 median ms; accuracy % at the bundle's threshold there)", targets]
    return "\n".join(lines)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "-"


def _side_line(label: str, side: dict[str, Any]) -> str:
    what = f"{side['name']} {side['version']}" if side["version"] else f"{side['name']} (no release)"
    return f"{label}: {side['kind']} {side['path']} -> {what}, read from {side['origin']}"


def _accuracy_table(result: dict[str, Any]) -> str:
    paired = result["pairing"]["possible"]
    level = result["pairing"]["uncertainty"]["level"] if paired else None
    head = ["artifact / measure", "A", "B", "change"]
    if paired:
        head += [f"paired change [{level:.0%}]", "McNemar p"]
    rows = []
    for name in result["order"]:
        block = result["artifacts"][name]
        test = block["paired"]
        rows.append([name, *[""] * (len(head) - 1)])
        if paired and test is None:
            rows[-1][-2] = "not paired (below)"
        measures: list[tuple[str, dict[str, Any], str, dict[str, Any] | None]] = [
            (g, block["groups"][g], "accuracy", test and test["groups"].get(g)) for g in result["groups"]
        ]
        measures += [
            ("mean", block["mean"], "accuracy", test and test["mean"]),
            ("STD", block["std"], "std", test and test["std"]),
            ("SER", block["ser"], "ratio", None),
        ]
        for measure, figure, style, pair in measures:
            row = [f"  {measure}", _cell(figure["a"], style), _cell(figure["b"], style)]
            change = figure["change"]
            row.append("-" if change is None else (f"{change:+.2f}" if style == "ratio" else f"{100 * change:+.2f}"))
            if paired:
                if pair is None:
                    row += ["-", "-"]
                else:
                    p = pair.get("mcnemar", {}).get("p_value")
                    row += [signed_interval(pair["delta"], pair["ci"]), "-" if p is None else _p_value(p)]
            rows.append(row)
    note = "change = B - A in points (SER: the ratio's change); A and B with their own bootstrap intervals"
    if paired:
        note += "; paired: the same pairs and draws for both, McNemar's exact p on the pair decisions"
    table = "\n".join(line.rstrip() for line in _fixed_width(head, rows).splitlines())
    return f"accuracy % and fairness per artifact\n{table}\n{note}"


def _cell(figure: dict[str, Any], style: str) -> str:
    value, ci = figure["value"], figure["ci"]
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if style == "ratio":
        bounds = f" [{', '.join(b if isinstance(b, str) else f'{b:.2f}' for b in ci)}]" if ci else ""
        return f"{value:.2f}{bounds}"
    return percent_interval(value, ci, "brackets" if style == "std" else "plusminus")


def _latency_table(result: dict[str, Any]) -> str:
    rows = []
    for name in result["order"]:
        lat = result["artifacts"][name]["latency"]
        if lat["a"] is None and lat["b"] is None:
            continue
        change, ratio = lat["change_ms"], lat["ratio"]
        rows.append(
            [
                name,
                _ms(lat["a"]),
                _ms(lat["b"]),
                "-" if change is None else f"{change:+.2f}",
                "-" if ratio is None else f"{ratio:.2f}x",
            ]
        )
    return _fixed_width(["artifact", "A ms", "B ms", "change ms", "B/A"], rows) if rows else ""


def _ms(measured: dict[str, Any] | None) -> str:
    if measured is None:
        return "-"
    if "error" in measured:
        return "error"
    if measured.get("median_ms") is None:
        return "-"
    ci = measured.get("median_ci")
    return f"{measured['median_ms']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _targets_table(targets: dict[str, Any]) -> str:
    rows = []
    for target, t in targets.items():
        where = "" if len(t["in"]) == 2 else f" (only {t['in'][0].upper()})"
        for name, m in t["artifacts"].items():
            acc = [
                "-" if x is None or x.get("accuracy_mean") is None else f"{100 * x['accuracy_mean']:.2f}"
                for x in (m["a"], m["b"])
            ]
            ms, dacc = m["change_ms"], m["change_accuracy"]
            rows.append(
                [
                    target + where,
                    name,
                    _ms(m["a"]),
                    _ms(m["b"]),
                    "-" if ms is None else f"{ms:+.2f}",
                    *acc,
                    "-" if dacc is None else f"{100 * dacc:+.2f}",
                ]
            )
    head = ["target", "artifact", "A ms", "B ms", "change ms", "A acc %", "B acc %", "change"]
    return _fixed_width(head, rows) if rows else ""
