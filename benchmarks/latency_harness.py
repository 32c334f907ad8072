"""The factory's latency harness against OpenVINO's ``benchmark_app`` on the same files.

For every model file of a release (ONNX Runtime and OpenVINO artifacts), at batch 1 and 32, 1 thread: the harness
(:func:`factory.runtime.latency.time_runner`: the runtime's own call on input bound beforehand; p50, p90, p99,
throughput), the whole runner call it replaced (input checks and output copy inside the timer), and for each IR
``benchmark_app`` (sync API, one stream, same threads, precision and shape). Rounds are interleaved and each round's
difference from ``benchmark_app`` pairs numbers taken seconds apart: on a VM whose speed moves by tens of percent
within a minute, the summary is the median over rounds of the paired differences, with its distribution-free interval
(many short rounds beat a few long ones).

Usage: python benchmarks/latency_harness.py --release runs/tinyfar_synthdistill/release [--rounds 3]
Writes benchmarks/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from run import cpu_name, save_results

from factory.runtime.benchmark_app import difference, run_benchmark_app
from factory.runtime.latency import measure_latency, median_interval, time_runner
from factory.runtime.runners import load_runner

BATCHES = (1, 32)


def repeats_for(runner: Any, batch: int, seconds: float) -> int:
    """How many timed calls fill about ``seconds`` (at least 20), from one untimed probe."""
    probe = time_runner(runner, (batch,), warmup=2, repeats=3)[batch].median_ms
    return max(20, int(seconds * 1e3 / probe))


def one_round(files: dict[str, Path], seconds: float) -> dict[str, Any]:
    """Every file at every batch: harness, whole call, and benchmark_app for IRs."""
    out: dict[str, Any] = {}
    for name, path in files.items():
        runner = load_runner(path, threads=1)
        for batch in BATCHES:
            repeats = repeats_for(runner, batch, seconds)
            bound = time_runner(runner, (batch,), warmup=10, repeats=repeats)[batch]
            x = np.random.default_rng(0).standard_normal((batch, 3, *runner.contract.input_size), dtype=np.float32)
            whole = measure_latency(lambda r=runner, x=x: r(x), warmup=10, repeats=repeats, batch=batch)
            row = {"harness": bound.to_dict(), "whole_call_ms": whole.median_ms}
            if path.suffix == ".xml":
                app = run_benchmark_app(path, batch, runner.contract.input_size, threads=1, seconds=seconds)
                row["benchmark_app_ms"] = app.median_ms
                row["difference"] = difference(bound.median_ms, app.median_ms)
                row["whole_call_difference"] = difference(whole.median_ms, app.median_ms)
            out[f"{name} b{batch}"] = row
            extra = f"  benchmark_app {row['benchmark_app_ms']:.2f}" if "benchmark_app_ms" in row else ""
            print(f"  {name:12s} b{batch:<3d} harness {bound.median_ms:7.2f}  whole call {whole.median_ms:7.2f}{extra}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, required=True, help="a release directory (its manifest's files)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per file, batch and tool in a round")
    parser.add_argument("--name", default="latency_harness", help="results/<name>.json")
    args = parser.parse_args()
    manifest = json.loads((args.release / "manifest.json").read_text())
    files = {
        name: args.release / entry["files"][0]
        for name, entry in manifest["artifacts"].items()
        if Path(entry["files"][0]).suffix in (".onnx", ".xml")
    }
    rounds = []
    for r in range(args.rounds):
        print(f"round {r + 1}", flush=True)
        rounds.append(one_round(files, args.seconds))
    summary: dict[str, Any] = {}
    for key in rounds[0]:
        rows = [round_[key] for round_ in rounds]
        entry = {
            "harness_ms": float(np.median([row["harness"]["median_ms"] for row in rows])),
            "p90_ms": float(np.median([row["harness"]["p90_ms"] for row in rows])),
            "p99_ms": float(np.median([row["harness"]["p99_ms"] for row in rows])),
            "throughput_per_s": float(np.median([row["harness"]["throughput_per_s"] for row in rows])),
            "whole_call_ms": float(np.median([row["whole_call_ms"] for row in rows])),
        }
        if "benchmark_app_ms" in rows[0]:
            entry["benchmark_app_ms"] = float(np.median([row["benchmark_app_ms"] for row in rows]))
            for kind in ("difference", "whole_call_difference"):
                # paired by round: the median of the per-round differences, with its distribution-free interval
                paired = [row[kind] for row in rows]
                entry[f"{kind}s"] = paired
                entry[f"{kind}_median"] = float(np.median(paired))
                entry[f"{kind}_ci"] = median_interval(paired)
        summary[key] = entry
    record = {
        "machine": cpu_name(),
        "threads": 1,
        "release": str(args.release),
        "results": {f"{key} | harness ms": entry["harness_ms"] for key, entry in summary.items()},
        "summary": summary,
        "rounds": rounds,
    }
    save_results(args.name, record, digits=4)


if __name__ == "__main__":
    main()
