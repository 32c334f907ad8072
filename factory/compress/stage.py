"""The compress stage: every method of ``compress.methods``, measured against its parent on held-out faces.

Calibration uses the data stage's calibration faces (``data.calibration``, proven apart from the benchmark); drift
is measured on benchmark faces no method fitted on, the same number from every demographic group
(``compress.drift_images_per_group``), spread over each group's identities, and reported overall and per group:
quantization error need not fall evenly on all groups. With it go the layers the method moved most
(:mod:`factory.compress.layer_drift`), which a failing cosine gate names.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from factory.compress.compressors import CompressContext
from factory.compress.layer_drift import layers_moved_most
from factory.data.benchmark import PairBenchmark
from factory.data.stage import BENCHMARK_FILE, CALIBRATION_FILE, load_calibration
from factory.data.world.renderer import make_world
from factory.export.parity import drift_by_group
from factory.models.checkpoint import load_model
from factory.pipeline.stage import Stage, StageContext, StageResult
from factory.runtime.artifacts import open_runner
from factory.runtime.preprocess import to_model_input_numpy


def drift_faces(bench: PairBenchmark, per_group: int) -> tuple[np.ndarray, np.ndarray]:
    """Image rows of ``per_group`` benchmark faces from every group, and the group of each.

    Within a group, faces of distinct identities come first (one image each, in file order), so the drift is
    measured on as many people as the count allows; the ``per_group`` are taken at even steps through them (the
    group's identities are laid out fold by fold, so every fold contributes), topped up the same way from the
    group's remaining images only when the group has fewer identities than ``per_group``. Deterministic: no draw.

    Args:
        bench: the benchmark (held out: nothing is fitted on it).
        per_group: faces per group.

    Raises:
        ValueError: a group has fewer than ``per_group`` images.
    """
    rows, labels = [], []
    for g, name in enumerate(bench.group_names):
        pairs = np.flatnonzero(bench.groups == g)
        images = np.stack([2 * pairs, 2 * pairs + 1], axis=1).reshape(-1)
        if len(images) < per_group:
            raise ValueError(
                f"compress.drift_images_per_group is {per_group} but group {name!r} has only {len(images)} benchmark "
                "faces: lower it, or enlarge the benchmark (data.benchmark_pairs_per_group)"
            )
        _, first = np.unique(bench.subjects[images], return_index=True)
        distinct = np.zeros(len(images), bool)
        distinct[first] = True
        chosen = _spread(images[distinct], per_group)
        chosen = np.concatenate([chosen, _spread(images[~distinct], per_group - len(chosen))])
        rows.append(np.sort(chosen))
        labels.append(np.full(per_group, g))
    return np.concatenate(rows), np.concatenate(labels)


def _spread(candidates: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` of ``candidates`` at even steps from the first (all of them when there are not more)."""
    take = min(count, len(candidates))
    return candidates[np.arange(take) * len(candidates) // take] if take else candidates[:0]


def compress_student(ctx: StageContext) -> StageResult:
    """Write each compressed artifact and report its embedding drift from its parent on held-out faces."""
    cfg, threads = ctx.config["compress"], ctx.config["threads"]
    contract = load_model(ctx.artifact("torch_fp32").path).contract
    data = ctx.inputs["data"]
    calibration = to_model_input_numpy(load_calibration(data.path(CALIBRATION_FILE)), contract)
    bench = PairBenchmark.load(data.path(BENCHMARK_FILE))
    # Chosen before any method runs, so a benchmark too small for the recipe fails before minutes of quantization.
    rows, groups = drift_faces(bench, cfg.drift_images_per_group)
    faces = to_model_input_numpy(bench.images[rows], contract)
    parents = {built.name: built for built in ctx.artifacts()}
    artifacts, methods = [], {}
    world = make_world(ctx.config["world"])
    for method in cfg.methods:
        start = time.perf_counter()
        method_ctx = CompressContext(
            parents=parents,
            calibration=calibration,
            work_dir=ctx.work_dir,
            world=world,
            seed=ctx.config["seed"],
            progress=ctx.progress,
        )
        made = method.compress(method_ctx)
        seconds = time.perf_counter() - start
        for artifact in made if isinstance(made, list) else [made]:
            parent = parents[artifact.derived_from]
            drift = drift_by_group(
                parent.runner(threads=threads),
                open_runner(artifact, ctx.work_dir, threads=threads),
                faces,
                groups,
                bench.group_names,
            )
            drift["layers_moved_most"] = _layers_moved_most(parent.path, ctx.work_dir / artifact.files[0], faces)
            artifacts.append(dataclasses.replace(artifact, parity={"against": parent.name, **drift}))
            methods[artifact.name] = {
                "method": dataclasses.asdict(method),
                "quantize_seconds": seconds,
                "drift": drift,
                **method_ctx.notes,
            }
    metrics = {
        "calibration_images": int(len(calibration)),
        "calibration_source": data.metrics["calibration"]["source"],
        "drift_images_per_group": cfg.drift_images_per_group,
        "methods": methods,
    }
    return StageResult(metrics, artifacts)


def _layers_moved_most(parent: Path, artifact: Path, faces: np.ndarray) -> list[dict[str, Any]]:
    """The layers the compression moved most, on 32 drift faces; none for a pair of files it cannot compare."""
    if parent.suffix != artifact.suffix or parent.suffix not in (".onnx", ".xml"):
        return []
    return layers_moved_most(parent, artifact, faces[:: max(1, len(faces) // 32)][:32])


def _summary(m: dict[str, Any]) -> str:
    parts = []
    for name, entry in m["methods"].items():
        drift = entry["drift"]
        # The group the artifact moves most: a mean over all groups can hide it.
        worst, stats = min(drift["groups"].items(), key=lambda item: item[1]["mean_cosine"])
        parts.append(
            f"{name} in {entry['quantize_seconds']:.1f}s, cosine vs FP32 {drift['mean_cosine']:.4f} "
            f"(1st percentile {drift['p1_cosine']:.4f}, lowest group {worst} {stats['mean_cosine']:.4f})"
        )
    return (
        f"{'; '.join(parts)}; calibrated on {m['calibration_images']} faces of "
        f"{m.get('calibration_source', 'procedural:calibration')}, drift on "  # records before the source was kept
        f"{m['drift_images_per_group']} held-out faces per group"
    )


STAGE = Stage(
    name="compress",
    needs=("data", "distill", "export"),
    config=lambda r: {"compress": r.compress, "threads": r.threads, "world": r.data.world, "seed": r.seed},
    run=compress_student,
    summary=_summary,
)
