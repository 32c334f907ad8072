"""``factory eval``: the full evaluation of one model or artifact, or of precomputed embeddings, as JSON and plots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from factory.data.benchmark import PairBenchmark
from factory.data.formats.npz import read_npz
from factory.evaluate.benchmark_eval import BenchmarkResult, embed_images, evaluate_embeddings
from factory.evaluate.plots import accuracy_by_stage, det_curves, score_histograms
from factory.evaluate.verification import pair_distances

EMBEDDINGS_EXPECTED = "embeddings (2N×D real numbers), issame (N booleans), optional groups (N) and subjects (2N)"


def benchmark_from_embeddings(path: str | os.PathLike[str]) -> tuple[np.ndarray, PairBenchmark]:
    """Embeddings and pair labels from an ``.npz``; every inconsistency is an error naming the file.

    Arrays: ``embeddings`` (2N×D, pair k = rows 2k, 2k+1), ``issame`` (N), optional ``groups`` (N strings) and
    ``subjects`` (2N).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such embeddings file")
    data = read_npz(path, EMBEDDINGS_EXPECTED)
    missing = [k for k in ("embeddings", "issame") if k not in data]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing} (expected embeddings 2N×D and issame N)")
    issame = _issame(path, data["issame"])
    groups = data["groups"].astype(str) if "groups" in data else np.full(len(issame), "all")
    subjects = data["subjects"] if "subjects" in data else np.arange(len(data["embeddings"]))
    if len(issame) == 0:
        raise ValueError(f"{path}: empty benchmark, no pairs (expected {EMBEDDINGS_EXPECTED}, N >= 1)")
    embeddings = _embeddings(path, data["embeddings"])
    if groups.ndim != 1 or subjects.ndim != 1:
        raise ValueError(
            f"{path}: groups {groups.shape} / subjects {subjects.shape} must be 1-D (expected {EMBEDDINGS_EXPECTED})"
        )
    if len(embeddings) != 2 * len(issame) or len(groups) != len(issame) or len(subjects) != len(embeddings):
        raise ValueError(
            f"{path}: {len(embeddings)} embedding rows, {len(issame)} issame, {len(groups)} groups, "
            f"{len(subjects)} subjects (expected 2N, N, N, 2N)"
        )
    names = tuple(dict.fromkeys(groups.tolist()))
    bench = PairBenchmark(
        images=np.empty((len(embeddings), 0, 0, 0), np.uint8),  # no pixels: the embeddings are given
        issame=issame,
        groups=np.array([names.index(g) for g in groups]),
        subjects=np.asarray(subjects),
        group_names=names,
    )
    return embeddings, bench


def _issame(path: Path, issame: np.ndarray) -> np.ndarray:
    """Booleans, or 0/1 integers: anything else (``"no"``, 0.5) would be silently true under ``astype(bool)``."""
    if issame.ndim != 1:
        raise ValueError(f"{path}: issame has shape {issame.shape} (expected N booleans)")
    if issame.dtype.kind == "b":
        return issame
    if issame.dtype.kind in "iu" and np.isin(issame, (0, 1)).all():
        return issame.astype(bool)
    raise ValueError(f"{path}: issame has dtype {issame.dtype} (expected N booleans, or 0/1 integers)")


def _embeddings(path: Path, embeddings: np.ndarray) -> np.ndarray:
    """Finite, non-zero real rows: every one is L2-normalised by the protocol, which a zero vector cannot be."""
    if embeddings.dtype.kind not in "fiu":
        raise ValueError(f"{path}: embeddings have dtype {embeddings.dtype} (expected real numbers, 2N×D)")
    if embeddings.ndim != 2 or len(embeddings) % 2 or embeddings.shape[1] == 0:
        raise ValueError(
            f"{path}: embeddings must be 2N×D (an even number of rows, D >= 1), got shape {embeddings.shape}"
        )
    if not np.isfinite(embeddings).all():
        raise ValueError(f"{path}: embeddings contain NaN or infinite values")
    zero = np.flatnonzero(~embeddings.any(axis=1))
    if len(zero):
        raise ValueError(
            f"{path}: embedding row {zero[0]} is all zeros ({len(zero)} such rows): a zero vector cannot be "
            "L2-normalised (expected non-zero embeddings)"
        )
    return embeddings


def check_groups(bench: PairBenchmark) -> None:
    """Each group needs genuine and impostor pairs, and 10 of them, for the protocol."""
    for g, name in enumerate(bench.group_names):
        same = bench.issame[bench.groups == g]
        if same.all() or not same.any():
            kind = "impostor" if same.all() else "genuine"
            raise ValueError(f"group {name!r} has no {kind} pairs: its accuracy is not estimable")
        if len(same) < 10:
            raise ValueError(f"group {name!r} has {len(same)} pairs: the 10-fold protocol needs at least 10")


def evaluate_and_plot(
    embeddings: np.ndarray, bench: PairBenchmark, plots: str | os.PathLike[str] | None = None, replicates: int = 1000
) -> dict[str, Any]:
    """The evaluation JSON of the embeddings; with ``plots``, DET curves, histograms and accuracies as PNGs there."""
    check_groups(bench)
    result: BenchmarkResult = evaluate_embeddings(embeddings, bench, replicates=replicates)
    report = result.to_dict()
    if plots is not None:
        out = Path(plots)
        out.mkdir(parents=True, exist_ok=True)
        scores = 1.0 - pair_distances(embeddings) / 2.0
        # The first target the impostors support; with none, the first target, drawn as unsupported.
        blocks = list(result.operational.values())
        shown = next((b for b in blocks if b["supported"]), blocks[0])
        det_curves(scores, bench.issame, bench.groups, bench.group_names, out / "det.png")
        score_histograms(
            scores,
            bench.issame,
            bench.groups,
            bench.group_names,
            out / "histograms.png",
            shown["threshold"],
            f"threshold at FMR {shown['target_fmr']:.0e}",
        )
        accs = {"model": {g: r.accuracy_mean for g, r in result.groups.items()}}
        accuracy_by_stage(accs, bench.group_names, out / "accuracy.png")
        report["plots"] = sorted(str(p) for p in out.glob("*.png"))
    return report


def embed_benchmark(runner: Any, bench: PairBenchmark, flip: bool, batch_size: int, progress: bool) -> np.ndarray:
    """Unit embeddings of every benchmark image through ``runner`` (its own contract preprocesses)."""
    from factory.runtime.runners import embed_uint8

    return embed_images(embed_uint8(runner), bench.images, batch_size, flip, "embed" if progress else None)
