#!/usr/bin/env python3
"""Model zoo benchmark: parameters, FLOPs and batch-1 CPU latency in torch eager, ONNX Runtime and OpenVINO FP32.

Every model is measured in one run, so the rows compare. Latency is the median over repeated calls after warm-up
at a fixed thread count; OpenVINO runs with INFERENCE_PRECISION_HINT=f32. Writes benchmarks/results/models.json.

Usage: python benchmarks/models.py [--threads 2] [--budget 3] [--models tinyfar_a mbf ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from run import cpu_name

from factory.export.onnx import export_onnx
from factory.export.openvino import convert_to_openvino
from factory.export.parity import fixed_inputs
from factory.files import write_json
from factory.models.zoo import create_model, list_models, model_info
from factory.runtime.latency import measure_latency
from factory.runtime.runners import onnx_runner, openvino_runner, torch_runner


def latency_ms(run, budget_s: float, threads: int) -> float:
    """Median ms; repeats sized so each runtime spends about ``budget_s`` (5 to 50 calls)."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    repeats = max(5, min(50, int(budget_s / max(first, 1e-4))))
    return measure_latency(run, warmup=2, repeats=repeats, threads=threads).median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per model and runtime")
    parser.add_argument("--models", nargs="*", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models or list_models():
            info = model_info(name)
            model = create_model(name).eval()
            x = fixed_inputs(model.contract, n=1)
            onnx_path = export_onnx(model, Path(tmp) / f"{name}.onnx")
            xml_path = convert_to_openvino(onnx_path, Path(tmp) / f"{name}.xml")
            runners = {
                "torch_ms": torch_runner(model, threads=args.threads),
                "onnxruntime_ms": onnx_runner(onnx_path, threads=args.threads),
                "openvino_fp32_ms": openvino_runner(xml_path, threads=args.threads, precision="f32"),
            }
            row = {"model": name, "params": info["params"], "mflops": info["flops"] / 1e6}
            for key, runner in runners.items():
                row[key] = latency_ms(lambda runner=runner, x=x: runner(x), args.budget, args.threads)
            rows.append(row)
            print(
                f"{name:<15}{row['params']:>13,}{row['mflops']:>10.1f}"
                f"{row['torch_ms']:>10.2f}{row['onnxruntime_ms']:>10.2f}{row['openvino_fp32_ms']:>10.2f}",
                flush=True,
            )
            for path in Path(tmp).iterdir():  # big IResNets: keep the disk footprint to one model
                path.unlink()
    out = Path(__file__).parent / "results" / "models.json"
    write_json(out, {"machine": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__}, "rows": rows})
    print(f"written to {out}")


if __name__ == "__main__":
    main()
