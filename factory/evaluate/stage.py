"""The validate stage: accuracy, fairness and latency of every artifact of the build on the same benchmark.

It iterates over the artifacts the upstream stages recorded, never over names: each runs through its own runtime
(torch, ONNX Runtime, OpenVINO, ...) but sees identical uint8 faces, preprocessed by its own contract. Reference
artifacts (the teacher) are measured as what the student is judged by; every other artifact is also timed at batch 1.

Every artifact is bootstrapped with the same subject draws, so each one that derives from another (student from
teacher, ONNX from torch, INT8 from FP32) is compared with its parent pair by pair: ``comparisons`` in the metrics.
A build with several teachers (MST-KD) measures each of them, per group, as a reference; the student is paired
with the first (its recorded parent).
The pair distances of every artifact are kept (``pair_distances.npz``) for comparisons across runs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from factory.data.benchmark import CrossGroupImpostors, PairBenchmark
from factory.data.stage import BENCHMARK_FILE, CROSS_FILE
from factory.evaluate.benchmark_eval import (
    BenchmarkResult,
    compare_results,
    embed_images,
    evaluate_embeddings,
    resample_benchmark,
)
from factory.evaluate.operational import cross_group_fmr
from factory.evaluate.tables import percent_interval
from factory.evaluate.verification import pair_distances
from factory.files import atomic_path, write_json
from factory.pipeline.stage import BuiltArtifact, Stage, StageContext, StageResult
from factory.recipe.schema import ValidateConfig
from factory.runtime.benchmark_app import BenchmarkAppUnavailable, difference, run_benchmark_app
from factory.runtime.latency import time_runner
from factory.runtime.runners import embed_uint8

METRICS_FILE = "metrics.json"
DISTANCES_FILE = "pair_distances.npz"


def validate_artifacts(ctx: StageContext) -> StageResult:
    """Evaluate every artifact on the benchmark and time the non-reference ones at batch 1."""
    cfg, threads = ctx.config["validate"], ctx.config["threads"]
    data = ctx.inputs["data"]
    bench = PairBenchmark.load(data.path(BENCHMARK_FILE))
    cross = CrossGroupImpostors.load(data.dir / CROSS_FILE, bench) if (data.dir / CROSS_FILE).exists() else None
    resampling = resample_benchmark(bench, cfg.bootstrap_replicates, cfg.confidence, cfg.bootstrap_seed)
    results: dict[str, Any] = {}
    evaluated: dict[str, BenchmarkResult] = {}
    distances: dict[str, np.ndarray] = {}
    comparisons: dict[str, Any] = {}
    for built in ctx.artifacts():
        embed = embed_uint8(built.runner(threads=threads))
        progress = built.name if ctx.progress else None
        started = time.perf_counter()
        embeddings = embed_images(embed, bench.images, cfg.batch_size, cfg.flip, progress)
        embedded = time.perf_counter()
        evaluation = evaluate_embeddings(embeddings, bench, resampling=resampling)
        evaluated[built.name], distances[built.name] = evaluation, pair_distances(embeddings)
        parent = built.artifact.derived_from
        if parent in evaluated:
            comparisons[built.name] = compare_results(evaluation, evaluated[parent], parent)
        entry: dict[str, Any] = {"evaluation": evaluation.to_dict()}
        # where validate's time goes, per artifact (BENCHMARKS.md): embedding dominates, the measures are cheap
        entry["seconds"] = {"embed": embedded - started, "measure": time.perf_counter() - embedded}
        if cross is not None:  # pairs among the benchmark's images: their embeddings are already there
            cross_emb = embeddings[cross.pairs.reshape(-1)]
            impostor = ~bench.issame
            entry["evaluation"]["cross_group_fmr"] = cross_group_fmr(
                1.0 - distances[built.name][impostor] / 2.0,
                bench.groups[impostor],
                1.0 - pair_distances(cross_emb) / 2.0,
                cross.cells,
                len(bench.group_names),
            )
        if not built.artifact.reference:
            entry |= time_artifact(built, cfg)
        results[built.name] = entry
    metrics = {
        "artifacts": results,
        "order": list(results),  # JSON files may come back with sorted keys: tables and plots keep build order
        "references": [b.name for b in ctx.artifacts() if b.artifact.reference],
        "groups": list(bench.group_names),
        "pairs": int(len(bench.issame)),
        "comparisons": comparisons,
    }
    # The measurements are this stage's output: as a file they enter the release's cache key.
    write_json(ctx.work_dir / METRICS_FILE, metrics)
    with atomic_path(ctx.work_dir / DISTANCES_FILE) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{name: d.astype(np.float32) for name, d in distances.items()})
    return StageResult(metrics)


def time_artifact(built: BuiltArtifact, cfg: ValidateConfig) -> dict[str, Any]:
    """Latency of the artifact's runtime call at every batch size, and ``benchmark_app``'s beside it for an IR.

    ``latency`` is batch 1's (what the gates read); ``latency_by_batch`` holds every size.
    """
    runner = built.runner(threads=cfg.threads)
    by_batch = time_runner(runner, cfg.latency_batches, cfg.latency_warmup, cfg.latency_repeats, cfg.confidence)
    timed: dict[str, Any] = {
        "latency": by_batch[1].to_dict(),
        "latency_by_batch": {str(b): result.to_dict() for b, result in by_batch.items()},
    }
    if built.artifact.runtime == "openvino" and cfg.benchmark_app_seconds > 0:
        checks: dict[str, Any] = {}
        for batch, ours in by_batch.items():
            try:
                app = run_benchmark_app(
                    built.path,
                    batch,
                    runner.contract.input_size,
                    threads=cfg.threads,
                    precision=str(built.artifact.options.get("precision", "f32")),
                    seconds=cfg.benchmark_app_seconds,
                )
            except (BenchmarkAppUnavailable, RuntimeError) as e:  # recorded and shown, never a silent gap
                checks[str(batch)] = {"error": str(e)}
                continue
            checks[str(batch)] = app.to_dict() | {"difference": difference(ours.median_ms, app.median_ms)}
        timed["benchmark_app"] = checks
    return timed


def _summary(m: dict[str, Any]) -> str:
    # The reference, the model it was distilled into and the most derived artifact: the ends of the build. With
    # several teachers the first stands for them (the student's parent), and the student is the first non-reference.
    order = [n for n in m["order"] if n in m["artifacts"]]
    references = set(m.get("references", order[:1]))
    built = [n for n in order if n not in references] or order
    shown = dict.fromkeys([order[0], built[0] if len(built) > 1 else built[-1], order[-1]])
    parts = []
    for name in shown:
        fairness = m["artifacts"][name]["evaluation"]["fairness"]
        ci = fairness.get("ci") or {}
        std = "-" if fairness["std"] is None else percent_interval(fairness["std"], ci.get("std"), "brackets")
        parts.append(f"{name} {percent_interval(fairness['mean'], ci.get('mean'))}% (STD {std})")
    return ", ".join(parts)


STAGE = Stage(
    name="validate",
    needs=("data", "teacher", "distill", "export", "compress"),
    config=lambda r: {"validate": r.validate, "threads": r.threads},
    run=validate_artifacts,
    summary=_summary,
)
