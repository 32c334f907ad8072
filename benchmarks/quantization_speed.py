#!/usr/bin/env python3
"""INT8 speed: every runtime's FP32 and INT8 form of a student, timed in interleaved rounds at 1 thread.

For each student (a ``factory build ... --until export`` run directory) the artifacts are:

- torch eager FP32 (the distilled checkpoint);
- ONNX Runtime FP32 (the factory's export) and the factory's Q/DQ ONNX (NNCF PTQ, :class:`PTQSettings` defaults);
- ONNX Runtime's own ``quantize_static`` Q/DQ ONNX (per-channel; the comparison row the issue names);
- OpenVINO FP32 (``INFERENCE_PRECISION_HINT=f32``) and the factory's OpenVINO INT8 IR.

Each round times every artifact at batch 1 and batch 32 (the runner's whole call: input checks and the output copy
are inside the timer, unlike benchmarks/latency_harness.py; inputs are made outside it), so ratios compare numbers
taken minutes apart at most; the result per artifact is the median over rounds of each round's median, and every
ratio is given per round. On this VM speeds drift by 2x across a day: compare ratios. OpenVINO's ``benchmark_app``
(sync API, 1 stream, 1 thread, f32 hint) times both IRs as a cross-check. Quantization wall time is recorded.
Writes benchmarks/results/<--name>.json.

Usage: python benchmarks/quantization_speed.py --run tinyfar_c=runs/q_tinyfar_c --run mobilefacenet=... [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from quantization_fidelity import finished_stage, latency, ort_quantize_static
from run import cpu_name, save_results

from factory.compress.ptq import quantize_onnx, quantize_openvino
from factory.data.stage import CALIBRATION_FILE, load_calibration
from factory.distill.stage import STUDENT_FILE
from factory.models.checkpoint import load_model
from factory.runtime.preprocess import to_model_input_numpy
from factory.runtime.runners import onnx_runner, openvino_runner, torch_runner

BATCHES = (1, 32)


def build_artifacts(run_dir: Path, work: Path) -> tuple[dict[str, Any], dict[str, float], np.ndarray, dict[str, Path]]:
    """Runners (1 thread) for every artifact of one student, quantize seconds, model inputs, the IR paths."""
    export, data, distill = (finished_stage(run_dir, s) for s in ("export", "data", "distill"))
    onnx_fp32, xml_fp32 = export / "student.onnx", export / "student_fp32.xml"
    ort_fp32 = onnx_runner(onnx_fp32, threads=1)
    calibration = to_model_input_numpy(load_calibration(data / CALIBRATION_FILE), ort_fp32.contract)
    seconds: dict[str, float] = {}

    def timed(name: str, make: Callable[[], Path]) -> Path:
        start = time.perf_counter()
        path = make()
        seconds[name] = time.perf_counter() - start
        return path

    xml_int8 = timed("openvino int8", lambda: quantize_openvino(xml_fp32, work / "int8.xml", calibration))
    qdq = timed("onnx q/dq int8 (nncf)", lambda: quantize_onnx(onnx_fp32, work / "int8.onnx", calibration))
    ortq = timed(
        "onnx q/dq int8 (onnxruntime quantize_static)",
        lambda: ort_quantize_static(onnx_fp32, work / "ortq.onnx", calibration, reduce_range=False),
    )
    torch.set_num_threads(1)
    runners = {
        "torch eager fp32": torch_runner(load_model(distill / STUDENT_FILE), threads=1),
        "onnxruntime fp32": ort_fp32,
        "onnx q/dq int8 (nncf)": onnx_runner(qdq, threads=1),
        "onnx q/dq int8 (onnxruntime quantize_static)": onnx_runner(ortq, threads=1),
        "openvino fp32": openvino_runner(xml_fp32, threads=1),
        "openvino int8": openvino_runner(xml_int8, threads=1),
    }
    return runners, seconds, calibration[:32], {"openvino fp32": xml_fp32, "openvino int8": xml_int8}


def benchmark_app_ms(xml: Path, batch: int, seconds: int) -> float | None:
    """OpenVINO's own median latency (ms) for ``xml`` at ``batch``, or None where benchmark_app is absent."""
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(tool).exists():
        return None
    command = [tool, "-m", str(xml), "-d", "CPU", "-api", "sync", "-hint", "none", "-nstreams", "1", "-nthreads", "1"]
    command += ["-infer_precision", "f32", "-shape", f"[{batch},3,112,112]", "-t", str(seconds)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Median:\s+([\d.]+) ms", out)
    if not match:
        raise RuntimeError(f"benchmark_app printed no median latency for {xml}:\n{out[-2000:]}")
    return float(match.group(1))


def study_student(run_dir: Path, rounds: int, budget_s: float, app_seconds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        runners, seconds, inputs, irs = build_artifacts(run_dir, Path(tmp))
        per_round: dict[str, dict[int, list[float]]] = {name: {b: [] for b in BATCHES} for name in runners}
        app: dict[str, dict[int, list[float]]] = {name: {b: [] for b in BATCHES} for name in irs}
        for r in range(rounds):
            for name, runner in runners.items():
                for b in BATCHES:
                    x = np.ascontiguousarray(inputs[:b])
                    per_round[name][b].append(latency(lambda runner=runner, x=x: runner(x), 1, budget_s))
            for name, xml in irs.items():
                for b in BATCHES:
                    ms = benchmark_app_ms(xml, b, app_seconds)
                    if ms is not None:
                        app[name][b].append(ms)
            line = "  ".join(f"{n} {per_round[n][1][-1]:.2f}" for n in runners)
            print(f"  round {r + 1}: b1 ms  {line}", flush=True)
    rows = {
        name: {f"ms_b{b}": float(np.median(v)) for b, v in by_batch.items()} | {"rounds_b1": by_batch[1]}
        for name, by_batch in per_round.items()
    }
    for name, by_batch in app.items():
        if by_batch[1]:
            rows[name] |= {f"benchmark_app_ms_b{b}": float(np.median(v)) for b, v in by_batch.items()}

    def ratios(slow: str, fast: str, b: int) -> list[float]:
        return [s / f for s, f in zip(per_round[slow][b], per_round[fast][b], strict=True)]

    speedups = {
        f"{fast} vs {slow}, batch {b}": ratios(slow, fast, b)
        for slow, fast in (
            ("openvino fp32", "openvino int8"),
            ("onnxruntime fp32", "onnx q/dq int8 (nncf)"),
            ("onnxruntime fp32", "onnx q/dq int8 (onnxruntime quantize_static)"),
            ("openvino fp32", "onnx q/dq int8 (nncf)"),
            ("torch eager fp32", "openvino int8"),
        )
        for b in BATCHES
    }
    return {"rows": rows, "speedup_per_round": speedups, "quantize_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="MODEL=DIR", help="student and run dir")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all artifacts")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per artifact, batch and round")
    parser.add_argument("--app-seconds", type=int, default=5, help="benchmark_app seconds per IR, batch and round")
    parser.add_argument("--name", default="quantization_speed", help="results/<name>.json")
    args = parser.parse_args()
    students, flat = {}, {}
    for item in args.run:
        name, run_dir = item.split("=", 1)
        print(name, flush=True)
        students[name] = study_student(Path(run_dir), args.rounds, args.budget, args.app_seconds) | {"run_dir": run_dir}
        for label, values in students[name]["speedup_per_round"].items():
            flat[f"{name} | {label} | median speed-up"] = float(np.median(values))
    save_results(args.name, {"machine": cpu_name(), "threads": 1, "results": flat, "students": students}, digits=3)


if __name__ == "__main__":
    main()
