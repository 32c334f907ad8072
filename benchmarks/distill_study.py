#!/usr/bin/env python3
"""Distillation study: every method of issue 11 on the procedural world, at one compute budget, with intervals.

Each arm is the main recipe (recipes/tinyfar_synthdistill.yaml: TinyFaR-C from the same iresnet_nano teacher) with a
few ``--set`` changes, built up to the distilled student; every arm's student sees the same number of images (steps
x batch). All students are measured on the build's own benchmark with one shared set of bootstrap draws, so each
comparison is paired: the change in mean accuracy, in STD and in every group's accuracy, with BC-bootstrap intervals
over subjects and McNemar's test per group (factory.evaluate.benchmark_eval.compare_results).

What the intervals cover: the benchmark's sampling of subjects. They do not cover the training run's own seed (a
second seed of one arm is the way to see that); a difference is called only when its interval excludes 0.

Writes benchmarks/results/distill_study.json and distill_study.png (per-group accuracy of every arm with its
interval). Usage:
    python benchmarks/distill_study.py [--arms a,b,...] [--set KEY=VALUE ...] [--quick]
--quick shrinks everything (a smoke run; results go to distill_study_quick.json, not to be committed).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from run import cpu_name, save_results

from factory.data.benchmark import PairBenchmark
from factory.data.stage import BENCHMARK_FILE
from factory.distill.stage import STUDENT_FILE
from factory.evaluate.benchmark_eval import (
    BenchmarkResult,
    compare_results,
    embed_images,
    evaluate_embeddings,
    resample_benchmark,
)
from factory.files import atomic_path
from factory.models.external import model_runner
from factory.pipeline.build import build
from factory.recipe import load_recipe
from factory.runtime.runners import embed_uint8

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "recipes" / "tinyfar_synthdistill.yaml"
MIXED = ROOT / "recipes" / "mixed_70_30_kd.yaml"
MST = ROOT / "recipes" / "mst_kd.yaml"
RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Arm:
    """One student: what it changes in the base recipe."""

    description: str
    overrides: tuple[str, ...]
    recipe: Path = BASE  # the mixed-data arms start from recipes/mixed_70_30_kd.yaml (itself the base + its source)


STATIC = ("distill.source.sampling=static",)
ARMS: dict[str, Arm] = {
    "kd_static": Arm("feature KD (normalised MSE), static sampling", STATIC),
    "kd_dynamic": Arm("feature KD, SynthDistill dynamic re-sampling (c = 1): the main recipe", ()),
    "kd_dynamic_adaptive": Arm(
        "feature KD, dynamic re-sampling, fairness-adaptive group balance",
        ("distill.source.group_balance=adaptive",),
    ),
    "qud": Arm("QUD (tau 0.1, queue 1024), static sampling", (*STATIC, "distill.method.kind=qud")),
    "margin_scratch": Arm(
        "no teacher: ElasticArcFace from scratch on labelled distill-split identities",
        (*STATIC, "distill.method.kind=margin"),  # labelled identities: a fixed set, nothing to re-sample
    ),
    "mixed_70_30": Arm(
        "feature KD on 70 % real (procedural stand-in: 50 identities x 8 images per group) + 30 % synthetic",
        (),
        MIXED,
    ),
    "real_only": Arm("feature KD on the real stand-in alone, group-balanced", ("distill.source.real_share=1",), MIXED),
    # MST-KD's teachers are its own (four, together the main teacher's budget): compared with each other only.
    "mst_per_group": Arm("MST-KD (SL adaptor, EAF-KD) from four group-specialised teachers", (), MST),
    "mst_balanced": Arm(
        "MST-KD (SL adaptor, EAF-KD) from four teachers on group-balanced quarters of the identities",
        ("teacher.specialists=balanced",),
        MST,
    ),
}

# (arm, against): the paired comparisons the study reports; a comparison runs when both arms ran.
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("kd_static", "margin_scratch"),
    ("kd_dynamic", "kd_static"),
    ("qud", "kd_static"),
    ("kd_dynamic_adaptive", "kd_dynamic"),
    ("mixed_70_30", "kd_dynamic"),  # against synthetic only: the same synthetic part, dynamic re-sampling
    ("mixed_70_30", "real_only"),
    ("mst_per_group", "mst_balanced"),
)

QUICK = (
    "teacher.train.steps=30",
    "distill.train.steps=30",
    "distill.train.warmup_steps=2",
    "data.benchmark_pairs_per_group=200",
)


def measure_arm(name: str, arm: Arm, overrides: list[str], run_dir: Path, replicates: int) -> dict[str, Any]:
    """Build one arm up to its student and embed the benchmark with it."""
    recipe = load_recipe(arm.recipe, [f"run_dir={run_dir}", *overrides, *arm.overrides])
    start = time.perf_counter()
    built = build(recipe, until="distill", progress=False)
    seconds = time.perf_counter() - start
    bench = PairBenchmark.load(built.stages["data"].path(BENCHMARK_FILE))
    distill = built.stages["distill"]
    # Embeddings are kept per student (its stage key names it), so an interrupted study restarts where it stopped.
    kept = run_dir / "study_embeddings" / f"{name}_{distill.dir.name}_flip{int(recipe.validate.flip)}.npy"
    if kept.exists():
        embeddings = np.load(kept)
    else:
        runner = model_runner(recipe.distill.student, distill.path(STUDENT_FILE), threads=recipe.threads)
        embeddings = embed_images(embed_uint8(runner), bench.images, recipe.validate.batch_size, recipe.validate.flip)
        kept.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(kept) as tmp, open(tmp, "wb") as f:
            np.save(f, embeddings)
    return {
        "bench": bench,
        "embeddings": embeddings,
        "record": {
            "description": arm.description,
            "recipe": str(arm.recipe.relative_to(ROOT)),
            "overrides": list(arm.overrides),
            "student": recipe.distill.student,
            "steps": recipe.distill.train.steps,
            "batch_size": recipe.distill.train.batch_size,
            "images_seen": recipe.distill.train.steps * recipe.distill.train.batch_size,
            "distill_s": distill.seconds,
            "cached": distill.cached,
            "build_s": seconds,
            "data": distill.metrics.get("data"),
        },
    }


def arm_figures(result: BenchmarkResult) -> dict[str, Any]:
    """Per-group accuracy with its interval, and mean, STD and SER with theirs (fractions)."""
    full = result.to_dict()
    fairness = full["fairness"]
    return {
        "groups": {g: {"accuracy": v["accuracy_mean"], "ci": v["ci"]} for g, v in full["groups"].items()},
        "mean": fairness["mean"],
        "std": fairness["std"],
        "ser": fairness["ser"],
        "ci": fairness["ci"],
    }


def paired(result: BenchmarkResult, against: BenchmarkResult, name: str) -> dict[str, Any]:
    """The paired difference ``result - against`` (mean, STD, per group), with a verdict on the mean and the STD."""
    delta = compare_results(result, against, name)
    return {
        "mean": delta["mean"],
        "std": delta["std"],
        "groups": delta["groups"],
        "mean_verdict": verdict(delta["mean"]),
        "std_verdict": verdict(delta["std"]) if delta["std"] else "not resolvable",
    }


def verdict(delta: dict[str, Any]) -> str:
    """'higher', 'lower' or 'not resolvable' from a paired difference's interval."""
    low, high = delta["ci"] if delta.get("ci") else (float("nan"), float("nan"))
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "not resolvable"


def plot(
    figures: dict[str, dict[str, Any]],
    path: Path,
    title: str = "Distillation study: per-group accuracy at one compute budget",
) -> None:
    """Per-group accuracy of every arm, with its interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(figures)
    groups = list(next(iter(figures.values()))["groups"])
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(groups) * len(arms) * 0.35, 4.2))
    for i, arm in enumerate(arms):
        acc = np.array([100 * figures[arm]["groups"][g]["accuracy"] for g in groups])
        ci = np.array([[100 * b for b in figures[arm]["groups"][g]["ci"]] for g in groups])
        x = np.arange(len(groups)) + (i - (len(arms) - 1) / 2) * width
        ax.bar(x, acc, width, label=f"{arm} (mean {100 * figures[arm]['mean']:.1f})")
        ax.errorbar(x, acc, yerr=[acc - ci[:, 0], ci[:, 1] - acc], fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("verification accuracy, % (95 % interval)")
    low = min(100 * figures[a]["groups"][g]["ci"][0] for a in arms for g in groups)
    ax.set_ylim(max(0.0, low - 5), 100)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of: {', '.join(ARMS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "distill_study")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run of the whole study")
    args = parser.parse_args()
    chosen = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(chosen) - set(ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
    overrides = [*QUICK, *args.overrides] if args.quick else list(args.overrides)
    replicates = 200 if args.quick else args.replicates
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    measured = {name: measure_arm(name, ARMS[name], overrides, args.run_dir, replicates) for name in chosen}
    bench = next(iter(measured.values()))["bench"]
    resampling = resample_benchmark(bench, replicates)  # one set of draws: every comparison is paired
    results = {name: evaluate_embeddings(m["embeddings"], bench, resampling=resampling) for name, m in measured.items()}
    figures = {name: arm_figures(r) for name, r in results.items()}

    comparisons = {}
    flat: dict[str, float] = {}
    for arm, against in COMPARISONS:
        if arm in results and against in results:
            comparisons[f"{arm}_vs_{against}"] = paired(results[arm], results[against], against)
            flat[f"{arm}_vs_{against}_mean_delta_pct"] = 100 * comparisons[f"{arm}_vs_{against}"]["mean"]["delta"]
    for name, f in figures.items():
        flat[f"{name}_mean_pct"] = 100 * f["mean"]
        flat[f"{name}_std_pct"] = 100 * f["std"]

    name = "distill_study_quick" if args.quick else "distill_study"
    record = {
        "machine": {"cpu": cpu_name(), "threads": min(2, os.cpu_count() or 1), "torch": torch.__version__},
        "base_recipe": str(BASE.relative_to(ROOT)),
        "overrides": overrides,
        "benchmark_pairs_per_group": int(len(bench.issame) // len(bench.group_names)),
        "bootstrap_replicates": replicates,
        "intervals_cover": "benchmark subjects (BC bootstrap); not the training seed",
        "arms": {n: {**m["record"], **figures[n]} for n, m in measured.items()},
        "comparisons": comparisons,
        "results": flat,
    }
    save_results(name, record, digits=2)
    plot(figures, RESULTS / f"{name}.png")
    print(table(record))


def table(record: dict[str, Any]) -> str:
    """A markdown table of the arms and one of the comparisons (percent, intervals in brackets)."""

    def pct(x: Any) -> str:
        return f"{100 * x:.2f}" if isinstance(x, int | float) else str(x)

    def bracket(ci: Any) -> str:
        return f"[{pct(ci[0])}, {pct(ci[1])}]" if ci else "n/a"

    arms = record["arms"]
    groups = list(next(iter(arms.values()))["groups"])
    lines = [
        "| arm | " + " | ".join(groups) + " | mean | STD | SER |",
        "|---" * (len(groups) + 4) + "|",
    ]
    for name, a in arms.items():
        cells = [f"{pct(a['groups'][g]['accuracy'])} {bracket(a['groups'][g]['ci'])}" for g in groups]
        ser = a["ser"] if isinstance(a["ser"], str) else f"{a['ser']:.2f}"
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {pct(a['mean'])} {bracket(a['ci']['mean'])} | {pct(a['std'])} {bracket(a['ci']['std'])} | {ser} |"
        )
    lines += ["", "| comparison | mean delta | verdict | STD delta | verdict |", "|---|---|---|---|---|"]
    for name, c in record["comparisons"].items():
        std = c["std"] or {}
        lines.append(
            f"| {name} | {pct(c['mean']['delta'])} {bracket(c['mean']['ci'])} | {c['mean_verdict']} | "
            f"{pct(std.get('delta', float('nan')))} {bracket(std.get('ci'))} | {c['std_verdict']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
