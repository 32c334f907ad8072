#!/usr/bin/env python3
"""INT8 fidelity: which NNCF PTQ settings keep a face model's embeddings, against ONNX Runtime's own quantization.

For each student (TinyFaR-C, TinyFaR-A, MobileFaceNet, distilled from the demo's teacher) every quantization below
runs on the build's 300 synthetic calibration faces, and is measured against its FP32 parent:

- embedding cosine to FP32 on held-out benchmark faces (200 per group): mean, 1st percentile, minimum;
- verification accuracy on the whole benchmark (no flip, as the demo): mean, per group, and the paired change vs FP32
  with its 95 % interval (bootstrap over subjects, the same draws for every row);
- batch-1 and batch-32 latency at 1 thread (the runtime's own call timed; OpenVINO FP32 with the f32 hint);
- quantization wall time.

With ``--qat-steps N`` the factory's QuantFace-style QAT (``{kind: qat}``, its recipe defaults but N steps) adds
its two artifacts, fine-tuned from the distilled checkpoint of the run.

Rows: NNCF on the OpenVINO IR and on the ONNX model with NNCF's defaults and with each setting of the factory's
:class:`~factory.compress.ptq.PTQSettings` changed; ONNX Runtime's ``quantize_static`` (QDQ, per-channel, the
comparison the issue names), with and without ``reduce_range``. Writes benchmarks/results/<--name>.json.

The students come from ``factory build`` run directories (``--run MODEL=DIR``, built with ``--until export``); the
script reads their export and data stages and changes nothing there.

Usage: python benchmarks/quantization_fidelity.py --run tinyfar_c=runs/q_tinyfar_c --run mobilefacenet=... [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from run import cpu_name, save_results

from factory.compress.ptq import PTQSettings, quantize_onnx, quantize_openvino
from factory.compress.stage import drift_faces
from factory.data.benchmark import PairBenchmark
from factory.data.stage import BENCHMARK_FILE, CALIBRATION_FILE, load_calibration
from factory.evaluate.benchmark_eval import compare_results, embed_images, evaluate_embeddings, resample_benchmark
from factory.export.parity import cosine_statistics, row_agreement
from factory.runtime.latency import measure_latency
from factory.runtime.preprocess import to_model_input_numpy
from factory.runtime.runners import embed_uint8, onnx_runner, openvino_runner

# (row name, runtime, settings): None settings = NNCF's own defaults (what factory shipped before this study).
NNCF_DEFAULTS = {"activation_range": "mean_minmax", "overflow_fix": "first_layer"}
OV_ROWS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("nncf defaults (mean of per-sample ranges, overflow fix on the first layer)", NNCF_DEFAULTS),
    ("global min/max ranges, overflow fix on the first layer", {"overflow_fix": "first_layer"}),
    ("factory default: global min/max, overflow fix on every layer", {}),
    ("factory default + embedding head kept float", {"keep_head_float": True}),
    ("factory default + full bias correction", {"fast_bias_correction": False}),
    ("factory default, preset performance", {"preset": "performance"}),
)
ONNX_ROWS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("nncf defaults", NNCF_DEFAULTS),
    ("factory default: global min/max, overflow fix on the first layer", {"overflow_fix": "first_layer"}),
    ("global min/max, overflow fix on every layer", {"overflow_fix": "enable"}),
    (
        "global min/max, overflow fix on the first layer, preset performance (TensorRT's symmetric activations)",
        {"overflow_fix": "first_layer", "preset": "performance"},
    ),
)


def latency(run: Callable[[], Any], threads: int, budget_s: float) -> float:
    """Median ms of ``run`` after warm-up, repeats sized to about ``budget_s`` (5 to 100 calls)."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    repeats = max(5, min(100, int(budget_s / max(first, 1e-4))))
    return measure_latency(run, warmup=3, repeats=repeats, threads=threads).median_ms


def finished_stage(run_dir: Path, stage: str) -> Path:
    """The most recently finished directory of ``stage`` in a run (the one the last build used)."""
    done = [p for p in (run_dir / "stages" / stage).glob("*") if (p / "stage.json").is_file()]
    if not done:
        raise SystemExit(f"{run_dir}: no finished {stage} stage (build it with `factory build RECIPE --until export`)")
    return max(done, key=lambda p: (p / "stage.json").stat().st_mtime)


class Student:
    """One built student: its FP32 files, calibration faces, benchmark and drift faces."""

    def __init__(self, run_dir: Path, drift_per_group: int) -> None:
        export, data = finished_stage(run_dir, "export"), finished_stage(run_dir, "data")
        self.distill = finished_stage(run_dir, "distill")
        self.onnx, self.xml = export / "student.onnx", export / "student_fp32.xml"
        self.fp32 = {"onnxruntime": onnx_runner(self.onnx, threads=2), "openvino": openvino_runner(self.xml, threads=2)}
        contract = self.fp32["onnxruntime"].contract
        self.calibration = to_model_input_numpy(load_calibration(data / CALIBRATION_FILE), contract)
        self.bench = PairBenchmark.load(data / BENCHMARK_FILE)
        rows, self.groups = drift_faces(self.bench, drift_per_group)
        self.drift_faces = to_model_input_numpy(self.bench.images[rows], contract)
        self.batch32 = self.drift_faces[:32]
        self.resampling = resample_benchmark(self.bench)

    def evaluate(self, runner: Any) -> Any:
        """The benchmark result of ``runner`` (no flip, as the demo validates)."""
        return evaluate_embeddings(
            embed_images(embed_uint8(runner), self.bench.images, batch_size=64, flip=False),
            self.bench,
            resampling=self.resampling,
        )


def measure(student: Student, runner: Any, latency_runner: Any, reference: Any, budget_s: float) -> dict[str, Any]:
    """Cosine to ``reference`` on the drift faces, benchmark accuracy and its paired change, and latency."""
    cosine, diff = row_agreement(reference["runner"], runner, student.drift_faces)
    result = student.evaluate(runner)
    full = result.to_dict()
    one = student.batch32[:1]
    return {
        "cosine": cosine_statistics(cosine, diff),
        "accuracy": {
            "mean": full["fairness"]["mean"],
            "mean_ci": full["fairness"]["ci"]["mean"],
            "std": full["fairness"]["std"],
            "groups": {g: v["accuracy_mean"] for g, v in full["groups"].items()},
        },
        "vs_fp32": compare_results(result, reference["result"], reference["name"]) if reference["result"] else None,
        "ms_b1": latency(lambda: latency_runner(one), 1, budget_s),
        "ms_b32": latency(lambda: latency_runner(student.batch32), 1, budget_s),
        "_result": result,
    }


def ort_quantize_static(onnx_in: Path, onnx_out: Path, calibration: np.ndarray, reduce_range: bool) -> Path:
    """ONNX Runtime's own static QDQ quantization (per-channel s8 weights, u8 activations), as its docs show it."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"input": calibration[i : i + 1]} for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    prepared = onnx_out.with_name(onnx_out.stem + "_pre.onnx")
    quant_pre_process(str(onnx_in), str(prepared))
    quantize_static(
        str(prepared),
        str(onnx_out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return onnx_out


def study_student(
    name: str,
    student: Student,
    work: Path,
    budget_s: float,
    quick: bool,
    qat_steps: int = 0,
    qat_batchnorm: tuple[str, ...] = ("frozen",),
) -> dict[str, Any]:
    """Every row for one student."""
    rows: dict[str, Any] = {}

    def fp32(runtime: str, label: str) -> dict[str, Any]:
        runner = student.fp32[runtime]
        single = onnx_runner(student.onnx) if runtime == "onnxruntime" else openvino_runner(student.xml)
        row = measure(student, runner, single, {"runner": runner, "result": None, "name": label}, budget_s)
        rows[label] = {"runtime": runtime, "precision": "fp32", **row}
        print(f"  {label:70s} acc {100 * row['accuracy']['mean']:.2f}  b1 {row['ms_b1']:.2f} ms", flush=True)
        return {"runner": runner, "result": row["_result"], "name": label}

    references = {"openvino": fp32("openvino", "openvino fp32"), "onnxruntime": fp32("onnxruntime", "onnxruntime fp32")}

    def int8(label: str, runtime: str, make: Callable[[Path], Path]) -> None:
        start = time.perf_counter()
        path = make(work / f"{name}_{len(rows)}{'.xml' if runtime == 'openvino' else '.onnx'}")
        seconds = time.perf_counter() - start
        opener = openvino_runner if runtime == "openvino" else onnx_runner
        runner, single = opener(path, threads=2), opener(path)
        row = measure(student, runner, single, references[runtime], budget_s)
        rows[label] = {"runtime": runtime, "precision": "int8", "quantize_s": seconds, **row}
        delta = row["vs_fp32"]["mean"]
        print(
            f"  {label:70s} cos {row['cosine']['mean_cosine']:.4f} p1 {row['cosine']['p1_cosine']:.4f} "
            f"acc {100 * row['accuracy']['mean']:.2f} ({100 * delta['delta']:+.2f}) b1 {row['ms_b1']:.2f} ms",
            flush=True,
        )

    for label, settings in OV_ROWS[: 3 if quick else None]:
        int8(
            f"openvino int8: {label}",
            "openvino",
            lambda p, s=settings: quantize_openvino(student.xml, p, student.calibration, PTQSettings(**s)),
        )
    for label, settings in ONNX_ROWS[: 2 if quick else None]:
        int8(
            f"onnx q/dq int8 (nncf): {label}",
            "onnxruntime",
            lambda p, s=settings: quantize_onnx(student.onnx, p, student.calibration, PTQSettings(**s)),
        )
    for reduce_range in (False, True):
        int8(
            f"onnx q/dq int8 (onnxruntime quantize_static{', reduce_range' if reduce_range else ''})",
            "onnxruntime",
            lambda p, r=reduce_range: ort_quantize_static(student.onnx, p, student.calibration, r),
        )
    for batchnorm in qat_batchnorm if qat_steps else ():
        made = quantization_aware(student, work / f"qat_{batchnorm}", qat_steps, batchnorm == "frozen")
        tag = f"qat, {qat_steps} steps" + (", batchnorm frozen" if batchnorm == "frozen" else "")
        int8(f"openvino int8: {tag}", "openvino", lambda p, m=made: m["openvino_qat_int8"])
        int8(f"onnx q/dq int8: {tag}", "onnxruntime", lambda p, m=made: m["onnx_qat_int8"])
    return {label: {k: v for k, v in row.items() if not k.startswith("_")} for label, row in rows.items()}


def quantization_aware(student: Student, work: Path, steps: int, freeze_batchnorm: bool) -> dict[str, Path]:
    """The factory's QAT (recipe defaults but ``steps`` and ``freeze_batchnorm``) of the distilled student: its two
    INT8 files by name."""
    import yaml

    from factory.compress.compressors import CompressContext
    from factory.compress.qat import QuantFaceQAT
    from factory.data.sources import ProceduralSourceConfig
    from factory.data.world.renderer import ProceduralFaceWorld
    from factory.pipeline.stage import BuiltArtifact
    from factory.runtime.artifacts import Artifact

    # the build's own world (its seed): QAT renders faces of a split of their own in it
    resolved = yaml.safe_load((student.distill / "recipe.resolved.yaml").read_text())
    world = ProceduralFaceWorld(seed=int(resolved["data"]["world"]["seed"]))
    parent = BuiltArtifact(Artifact("torch_fp32", ("student.pt",), "torch"), student.distill)
    out = work
    out.mkdir(parents=True, exist_ok=True)
    ctx = CompressContext({"torch_fp32": parent}, student.calibration, out, world=world, seed=0, progress=True)
    method = QuantFaceQAT(source=ProceduralSourceConfig(), freeze_batchnorm=freeze_batchnorm)
    method.train.steps = steps
    start = time.perf_counter()
    made = {artifact.name: out / artifact.files[0] for artifact in method.compress(ctx)}
    print(f"  qat: {steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="MODEL=DIR",
        help="a student and the run directory built with `factory build RECIPE --until export`",
    )
    parser.add_argument("--drift-per-group", type=int, default=200)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of latency timing per row and batch")
    parser.add_argument("--quick", action="store_true", help="three OpenVINO and two NNCF ONNX rows only")
    parser.add_argument("--qat-steps", type=int, default=0, help="add the factory's QAT with this many steps")
    parser.add_argument(
        "--qat-batchnorm",
        choices=("train", "frozen", "both"),
        default="frozen",
        help="QAT with BatchNorm frozen (the factory's default), in training mode, or one of each",
    )
    parser.add_argument("--name", default="quantization_fidelity", help="results/<name>.json")
    args = parser.parse_args()
    batchnorm = ("train", "frozen") if args.qat_batchnorm == "both" else (args.qat_batchnorm,)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.run:
            name, run_dir = item.split("=", 1)
            print(name, flush=True)
            student = Student(Path(run_dir), args.drift_per_group)
            results[name] = {
                "run_dir": run_dir,
                "calibration_images": len(student.calibration),
                "drift_faces": len(student.drift_faces),
                "benchmark_pairs": int(len(student.bench.issame)),
                "rows": study_student(name, student, Path(tmp), args.budget, args.quick, args.qat_steps, batchnorm),
            }
    flat = {}
    for name, entry in results.items():
        for label, row in entry["rows"].items():
            if row["precision"] == "int8":
                flat[f"{name} | {label} | cosine mean"] = row["cosine"]["mean_cosine"]
                flat[f"{name} | {label} | cosine p1"] = row["cosine"]["p1_cosine"]
    record = {"machine": cpu_name(), "threads_latency": 1, "results": flat, "students": results}
    save_results(args.name, record, digits=4)


if __name__ == "__main__":
    main()
