#!/usr/bin/env python3
"""Training speed through the one training loop: fp32 vs bf16 autocast, and 1 process vs 2-process DDP, on the CPU.

The demo recipe's distillation (recipes/tinyfar_synthdistill.yaml: TinyFaR-C from an iresnet_nano teacher, feature
KD on dynamically re-sampled procedural faces) runs through ``factory.train.loop.fit`` as a build runs it: rendering
every batch, the teacher's forward pass, the student's step, the source's feedback. The teacher is untrained (its
speed is the trained one's). Each measurement follows a warm-up run of 3 steps in the same process.

- ``fp32`` / ``bf16``: ``train.amp`` none vs bf16 in one process at ``--threads`` threads; steps/s and the mean
  compute seconds per step (everything but rendering). bf16 is fast only on CPUs with bf16 instructions
  (``cpu_bf16`` in the machine record: AVX512-BF16 or AMX); elsewhere autocast converts and is slower.
- ``ddp_1`` / ``ddp_2``: images/s of one process at ``--threads`` threads vs two DDP processes (gloo, each with
  threads // 2, as ``factory build --nproc 2`` gives them). Each rank renders the whole batch and trains on its half.

Writes benchmarks/results/training.json. ``--quick`` (2 steps of 4, no warm-up) only checks the script runs: its
numbers are not measurements. It takes 26 s with ``--threads 1`` on the 2-core VM shared with other jobs; at 2 threads
on cores other jobs also use, torch's threads wait on each other and the same run took 65 s.

Usage: python benchmarks/training.py [--threads 2] [--steps 30] [--batch 64] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from run import cpu_name, save_results

from factory.data.sources import SourceContext
from factory.data.world.renderer import make_world
from factory.distill.methods import MethodContext
from factory.distill.stage import DISTILL_SPLIT
from factory.files import read_json, write_json
from factory.models.zoo import create_model
from factory.recipe import Recipe, load_recipe
from factory.recipe.schema import usable_cpus
from factory.train.loop import FitResult, fit

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tinyfar_synthdistill.yaml"


def distill_run(recipe: Recipe, work: Path, steps: int, batch: int, amp: str) -> FitResult:
    """The recipe's distillation for ``steps`` steps of ``batch`` faces in ``amp``, from scratch in ``work``."""
    torch.manual_seed(recipe.seed)
    teacher = create_model(recipe.teacher.model).eval()
    student = create_model(recipe.distill.student)
    where = SourceContext(
        world=make_world(recipe.data.world),
        batch_size=batch,
        seed=recipe.seed,
        split=DISTILL_SPLIT,
        labelled=False,
        size=student.contract.input_size[0],
    )
    source = recipe.distill.source.open(where)
    task = recipe.distill.method.build(MethodContext(teacher=teacher, student=student, seed=recipe.seed))
    # No warm-up schedule, checkpoint or TensorBoard: what is timed is the step itself.
    cfg = dataclasses.replace(
        recipe.distill.train,
        steps=steps,
        batch_size=batch,
        amp=amp,
        warmup_steps=0,
        checkpoint_every=steps + 1,
        tensorboard=False,
    )
    work.mkdir(parents=True, exist_ok=True)
    return fit(student, task, source, cfg, work, "bench", progress=False, log_every=steps)


def measure(recipe: Recipe, work: Path, steps: int, batch: int, amp: str, warmup: int) -> dict[str, float]:
    """Steps/s, images/s and compute seconds per step of one run, after a warm-up run of ``warmup`` steps."""
    if warmup:
        distill_run(recipe, work / f"warmup-{amp}", warmup, batch, amp)
    result = distill_run(recipe, work / f"run-{amp}", steps, batch, amp)
    return {
        "steps_per_s": (result.steps - result.resumed_from) / result.seconds,
        "images_per_s": result.images_per_second,
        "compute_s_per_step": result.compute_seconds,
        "data_s_per_step": result.data_seconds,
    }


def ddp_rank(rank: int, size: int, work: Path, steps: int, batch: int, threads: int, warmup: int) -> None:
    """One DDP rank (``torch.multiprocessing.spawn``): warm up, measure, and rank 0 writes its figures."""
    import torch.distributed as dist

    torch.set_num_threads(max(1, threads // size))
    dist.init_process_group("gloo", init_method=f"file://{work / 'rendezvous'}", rank=rank, world_size=size)
    try:
        figures = measure(load_recipe(RECIPE), work / f"rank{rank}", steps, batch, "none", warmup)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        write_json(work / "ddp.json", figures)


def machine(threads: int) -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return {
        "host": platform.node(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "cpu_bf16": any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16")),
        "threads": threads,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="2 steps of 4, no warm-up: checks the script only")
    args = parser.parse_args()
    # Quick mode is small because bf16 without bf16 instructions is about 10x slower than fp32 (2 cores, AMD EPYC).
    steps, batch, warmup = (2, 4, 0) if args.quick else (args.steps, args.batch, 3)
    recipe = load_recipe(RECIPE)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.set_num_threads(args.threads)
        for amp in ("none", "bf16"):
            name = "fp32" if amp == "none" else amp
            for key, value in measure(recipe, work / name, steps, batch, amp, warmup).items():
                results[f"{name}_{key}"] = value
        results["bf16_over_fp32_steps"] = results["bf16_steps_per_s"] / results["fp32_steps_per_s"]
        results["ddp_1_images_per_s"] = results["fp32_images_per_s"]  # the same run: one process, all threads
        if usable_cpus() >= 2:
            mp.spawn(ddp_rank, args=(2, work, steps, batch, args.threads, warmup), nprocs=2, join=True)
            results["ddp_2_images_per_s"] = read_json(work / "ddp.json")["images_per_s"]
            results["ddp_2_over_1"] = results["ddp_2_images_per_s"] / results["ddp_1_images_per_s"]
    record = {
        "machine": machine(args.threads),
        "quick": args.quick,
        "recipe": RECIPE.name,
        "student": recipe.distill.student,
        "teacher": recipe.teacher.model,
        "steps": steps,
        "batch": batch,
        "results": results,
    }
    save_results("training", record, digits=3)


if __name__ == "__main__":
    main()
