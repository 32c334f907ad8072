"""The compress stage: every method of ``compress.methods``, measured against its parent on held-out faces.

Calibration uses the data stage's synthetic faces only; drift is measured on benchmark faces no method fitted on.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from factory.compress.compressors import CompressContext
from factory.data.benchmark import PairBenchmark
from factory.data.stage import BENCHMARK_FILE, CALIBRATION_FILE, load_calibration
from factory.export.parity import check_parity
from factory.models.checkpoint import load_model
from factory.pipeline.stage import Stage, StageContext, StageResult
from factory.runtime.artifacts import open_runner
from factory.runtime.preprocess import to_model_input_numpy

DRIFT_IMAGES = 64


def compress_student(ctx: StageContext) -> StageResult:
    """Write each compressed artifact and report its embedding drift from its parent on held-out faces."""
    cfg, threads = ctx.config["compress"], ctx.config["threads"]
    contract = load_model(ctx.artifact("torch_fp32").path).contract
    data = ctx.inputs["data"]
    calibration = to_model_input_numpy(load_calibration(data.path(CALIBRATION_FILE)), contract)
    # Drift is measured on faces the calibration never saw (benchmark faces; nothing is fitted on them here).
    faces = to_model_input_numpy(PairBenchmark.load(data.path(BENCHMARK_FILE)).images[:DRIFT_IMAGES], contract)
    parents = {built.name: built for built in ctx.artifacts()}
    artifacts, methods = [], {}
    for method in cfg.methods:
        start = time.perf_counter()
        artifact = method.compress(CompressContext(parents=parents, calibration=calibration, work_dir=ctx.work_dir))
        seconds = time.perf_counter() - start
        parent = parents[artifact.derived_from]
        drift = check_parity(
            parent.runner(threads=threads), open_runner(artifact, ctx.work_dir, threads=threads), faces
        ).to_dict()
        artifacts.append(dataclasses.replace(artifact, parity={"against": parent.name, **drift}))
        methods[artifact.name] = {"method": dataclasses.asdict(method), "quantize_seconds": seconds, "drift": drift}
    return StageResult({"calibration_images": int(len(calibration)), "methods": methods}, artifacts)


def _summary(m: dict[str, Any]) -> str:
    return "; ".join(
        f"INT8 ({entry['method'].get('preset', entry['method']['kind'])}) on {m['calibration_images']} synthetic "
        f"faces in {entry['quantize_seconds']:.1f}s, cosine vs FP32 {entry['drift']['mean_cosine']:.4f}"
        for entry in m["methods"].values()
    )


STAGE = Stage(
    name="compress",
    needs=("data", "distill", "export"),
    config=lambda r: {"compress": r.compress, "threads": r.threads},
    run=compress_student,
    summary=_summary,
)
