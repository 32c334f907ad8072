"""The compress stage: NNCF post-training INT8 quantization of the OpenVINO FP32 IR on synthetic calibration faces."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from factory.compress.ptq import quantize_openvino
from factory.data.benchmark import PairBenchmark
from factory.data.build import load_calibration
from factory.data.preprocess import to_model_input_numpy
from factory.export.parity import check_parity
from factory.export.runtimes import openvino_runner
from factory.models.checkpoint import load_model

if TYPE_CHECKING:
    from factory.pipeline import StageContext

OPENVINO_INT8_FILE = "student_int8.xml"
DRIFT_IMAGES = 64


def compress_student(ctx: StageContext) -> dict[str, Any]:
    """Write ``student_int8.xml/.bin`` and report INT8-vs-FP32 embedding drift on held-out faces."""
    cfg, threads = ctx.recipe.compress, ctx.recipe.threads
    contract = load_model(ctx.inputs["distill"].path("student.pt")).contract
    calibration = to_model_input_numpy(load_calibration(ctx.inputs["data"].path("calibration.npz")), contract)
    fp32_xml = ctx.inputs["export"].path("student_fp32.xml")
    start = time.perf_counter()
    int8_xml = quantize_openvino(
        fp32_xml,
        ctx.work_dir / OPENVINO_INT8_FILE,
        calibration,
        preset=cfg.preset,
        keep_head_float=cfg.keep_head_float,
        fast_bias_correction=cfg.fast_bias_correction,
    )
    seconds = time.perf_counter() - start
    # Drift is measured on faces the calibration never saw (benchmark faces; nothing is fitted on them here).
    faces = PairBenchmark.load(ctx.inputs["data"].path("benchmark.npz")).images[:DRIFT_IMAGES]
    drift = check_parity(
        openvino_runner(fp32_xml, threads=threads),
        openvino_runner(int8_xml, threads=threads),
        to_model_input_numpy(faces, contract),
    )
    return {
        "calibration_images": int(len(calibration)),
        "preset": cfg.preset,
        "quantize_seconds": seconds,
        "drift_vs_fp32": drift.to_dict(),
    }
