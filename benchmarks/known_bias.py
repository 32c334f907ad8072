#!/usr/bin/env python3
"""Known-bias study: teacher and student on a world where one group is harder by a declared amount.

Builds recipes/known_bias.yaml up to the distilled student (the demo recipe with gamma made harder in
data.world.difficulty), then measures teacher and student on the build's own benchmark: per-group protocol accuracy
with 95 % bootstrap intervals over subjects (one set of draws for both models). The ground truth no real benchmark
can give is the declared ranking: the harder group should be the lowest for both, with an interval that separates it
from every other group. With --baseline the demo recipe (the same world without the change) is built and measured
too, so each group's shift is visible. Writes benchmarks/results/known_bias.json.

Usage: python benchmarks/known_bias.py [--baseline] [--set KEY=VALUE ...]
(on 2 cores: about 11 minutes to build, 6 more to measure both models at the recipe's 2000 pairs per group, with flip.)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch
from run import cpu_name, save_results

from factory.data.benchmark import PairBenchmark
from factory.data.stage import BENCHMARK_FILE
from factory.distill.stage import STUDENT_FILE
from factory.evaluate.benchmark_eval import embed_images, evaluate_embeddings, resample_benchmark
from factory.models.external import model_runner
from factory.pipeline.build import build
from factory.recipe import Recipe, load_recipe
from factory.runtime.runners import embed_uint8
from factory.train.stage import TEACHER_FILE

ROOT = Path(__file__).resolve().parents[1]
KNOWN_BIAS = ROOT / "recipes" / "known_bias.yaml"
BASELINE = ROOT / "recipes" / "tinyfar_synthdistill.yaml"


def measure(recipe: Recipe, replicates: int) -> dict[str, Any]:
    """Build ``recipe`` up to distillation; per model, group -> accuracy and 95 % interval (fractions)."""
    start = time.perf_counter()
    result = build(recipe, until="distill", progress=False)
    built_s = time.perf_counter() - start
    bench = PairBenchmark.load(result.stages["data"].path(BENCHMARK_FILE))
    resampling = resample_benchmark(bench, replicates)  # shared: both models are judged on the same draws
    models = {
        "teacher": (recipe.teacher.model, result.stages["teacher"].path(TEACHER_FILE)),
        "student": (recipe.distill.student, result.stages["distill"].path(STUDENT_FILE)),
    }
    measured: dict[str, Any] = {"build_s": built_s}
    for role, (name, weights) in models.items():
        runner = model_runner(name, weights, threads=recipe.threads)
        embeddings = embed_images(embed_uint8(runner), bench.images, recipe.validate.batch_size, recipe.validate.flip)
        groups = evaluate_embeddings(embeddings, bench, resampling=resampling).to_dict()["groups"]
        measured[role] = {
            g: {"accuracy": v["accuracy_mean"], "ci": v["ci"], "pairs": v["pairs"]} for g, v in groups.items()
        }
    measured["measure_s"] = time.perf_counter() - start - built_s
    return measured


def ranking(groups: dict[str, dict[str, Any]], hard: str) -> dict[str, float]:
    """Flat figures (percent) of one model: accuracy and interval per group, and how far ``hard`` sits below."""
    out: dict[str, float] = {}
    for name, g in groups.items():
        out[f"{name}_accuracy_pct"] = 100 * g["accuracy"]
        out[f"{name}_ci_low_pct"], out[f"{name}_ci_high_pct"] = (100 * b for b in g["ci"])
    others = [g for name, g in groups.items() if name != hard]
    out["hard_group_lowest"] = float(all(groups[hard]["accuracy"] < g["accuracy"] for g in others))
    out["gap_to_next_lowest_pct"] = 100 * (min(g["accuracy"] for g in others) - groups[hard]["accuracy"])
    # > 0: the hard group's interval lies wholly below every other group's
    out["interval_separation_pct"] = 100 * (min(g["ci"][0] for g in others) - groups[hard]["ci"][1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help="also build and measure the demo recipe")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--replicates", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    recipe = load_recipe(KNOWN_BIAS, args.overrides)
    declared = {name: dataclasses.asdict(change) for name, change in recipe.data.world.difficulty.items()}
    (hard,) = declared  # the study's recipe makes exactly one group harder
    worlds = {"known_bias": measure(recipe, args.replicates)}
    if args.baseline:
        worlds["baseline"] = measure(load_recipe(BASELINE, args.overrides), args.replicates)
    results: dict[str, float] = {}
    for world, measured in worlds.items():
        for role in ("teacher", "student"):
            results.update({f"{world}_{role}_{k}": v for k, v in ranking(measured[role], hard).items()})
        results[f"{world}_build_s"] = measured["build_s"]
        results[f"{world}_measure_s"] = measured["measure_s"]
    record = {
        "machine": {"cpu": cpu_name(), "threads": recipe.threads, "torch": torch.__version__},
        "recipe": str(KNOWN_BIAS.relative_to(ROOT)),
        "overrides": args.overrides,
        "declared": declared,
        "hard_group": hard,
        "benchmark_pairs_per_group": recipe.data.benchmark_pairs_per_group,
        "bootstrap_replicates": args.replicates,
        "groups": {world: {role: m[role] for role in ("teacher", "student")} for world, m in worlds.items()},
        "results": results,
    }
    save_results("known_bias", record, digits=2)


if __name__ == "__main__":
    main()
