"""Every shipped artifact measured on the local CPU targets through their bundles, as a deployer would.

For each target (default: ``local-cpu-openvino`` and ``local-cpu-onnxruntime``), the recipe's release is bundled and
run by the bundle's runner in a fresh environment holding only numpy and the target's runtime (``factory deploy
validate``), at batch 1 and 32 and 1 thread: p50 with its interval, p90, p99 and throughput per artifact, and for each
OpenVINO IR ``benchmark_app`` on the same file beside it. The recipe is built first if it is not (cached otherwise).

Usage: python benchmarks/targets.py RECIPE [--set KEY=VALUE ...] [--repeats 300] [--name targets_local_cpu]
Writes benchmarks/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from pathlib import Path
from typing import Any

from run import cpu_name, save_results

from factory.deploy.commands import bundle_target, target_of, validate_target
from factory.recipe import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--targets", nargs="+", default=["local-cpu-openvino", "local-cpu-onnxruntime"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0, help="benchmark_app's time per IR and batch")
    parser.add_argument("--name", default="targets_local_cpu")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    results: dict[str, float] = {}
    detail: dict[str, Any] = {}
    for entry in args.targets:
        target = dataclasses.replace(
            target_of(recipe, entry),
            batch_sizes=args.batches,
            latency_repeats=args.repeats,
            benchmark_app_seconds=args.seconds,
        )
        bundled = bundle_target(recipe, target, Path(f"/tmp/factory-bench-bundles/{target.name}"), echo=lambda s: None)
        rows, measured = validate_target(recipe, bundled, None, echo=print)
        detail[target.name] = {"rows": rows, "artifacts": measured}
        for name, m in measured.items():
            for batch, latency in m["latency_by_batch"].items():
                key = f"{target.name} {name} b{batch}"
                results[f"{key} p50 ms"] = latency["median_ms"]
                results[f"{key} p99 ms"] = latency["p99_ms"]
                results[f"{key} faces/s"] = latency["throughput_per_s"]
                app = m["benchmark_app"].get(batch)
                if app and "median_ms" in app:
                    results[f"{key} benchmark_app ms"] = app["median_ms"]
                    results[f"{key} difference %"] = 100 * app["difference"]
    record = {
        "machine": {"cpu": cpu_name(), "python": platform.python_version()},
        "recipe": str(args.recipe),
        "overrides": args.overrides,
        "settings": {"batches": args.batches, "repeats": args.repeats, "benchmark_app_seconds": args.seconds},
        "results": results,
        "targets": detail,
    }
    save_results(args.name, record, digits=2)


if __name__ == "__main__":
    main()
