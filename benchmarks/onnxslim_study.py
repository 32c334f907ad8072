"""Does onnxslim make the factory's ONNX faster? The exported student against its slimmed copy, under ONNX Runtime.

onnxslim folds constants, removes dead and identity nodes and fuses patterns. ONNX Runtime applies its own graph
optimisations when it loads a model, so a smaller graph on disk need not run faster: this measures it. For each ONNX
file: node counts before and after, parity of the two (max |difference| of the embeddings), and ONNX Runtime latency
at batch 1 and 32, 1 thread, over interleaved rounds (the harness of factory.runtime.latency); the summary is the
median over rounds of the paired ratio slim / original, with its distribution-free interval.

Usage: python benchmarks/onnxslim_study.py ONNX [ONNX ...] [--rounds 9]
Writes benchmarks/results/onnxslim_study.json.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxslim
from run import cpu_name, save_results

from factory.runtime.latency import median_interval, time_runner
from factory.runtime.runners import load_runner

BATCHES = (1, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    results: dict[str, float] = {}
    detail: dict[str, Any] = {}
    for path in args.onnx:
        original = onnx.load(str(path))
        slim = onnxslim.slim(onnx.load(str(path)))
        del slim.metadata_props[:]
        slim.metadata_props.extend(original.metadata_props)  # the contract, so the factory's runner loads it
        out = Path(tempfile.mkdtemp()) / f"{path.stem}_slim.onnx"
        onnx.save(slim, str(out))
        label = f"{path.parent.name}/{path.name}"
        runners = {"original": load_runner(path, threads=1), "slim": load_runner(out, threads=1)}
        x = np.random.default_rng(0).standard_normal((4, 3, 112, 112), dtype=np.float32)
        parity = float(np.abs(runners["original"](x) - runners["slim"](x)).max())
        ratios: dict[int, list[float]] = {b: [] for b in BATCHES}
        medians: dict[str, dict[int, list[float]]] = {k: {b: [] for b in BATCHES} for k in runners}
        for _ in range(args.rounds):
            for batch in BATCHES:
                repeats = args.repeats if batch == 1 else max(20, args.repeats // 16)
                timed = {k: time_runner(r, (batch,), 10, repeats)[batch].median_ms for k, r in runners.items()}
                for k, v in timed.items():
                    medians[k][batch].append(v)
                ratios[batch].append(timed["slim"] / timed["original"])
        detail[label] = {
            "nodes": {"original": len(original.graph.node), "slim": len(slim.graph.node)},
            "max_abs_difference": parity,
            "medians_ms": medians,
            "ratios": ratios,
        }
        results[f"{label} nodes original"] = len(original.graph.node)
        results[f"{label} nodes slim"] = len(slim.graph.node)
        for batch in BATCHES:
            low, high = median_interval(ratios[batch], 0.95)
            results[f"{label} b{batch} slim/original"] = float(np.median(ratios[batch]))
            results[f"{label} b{batch} slim/original CI low"] = low
            results[f"{label} b{batch} slim/original CI high"] = high
        print(f"{label}: nodes {len(original.graph.node)} -> {len(slim.graph.node)}, max |diff| {parity:.2e}")
    record = {
        "machine": {"cpu": cpu_name(), "python": platform.python_version(), "onnxslim": onnxslim.__version__},
        "settings": {"rounds": args.rounds, "repeats": args.repeats, "threads": 1},
        "results": results,
        "detail": detail,
    }
    save_results("onnxslim_study", record, digits=3)


if __name__ == "__main__":
    main()
