#!/usr/bin/env python3
"""Distillation throughput: the factory's loop against a bare torch loop on the same model, batch and data.

Three loops distil the main recipe's student (TinyFaR-C) from an iresnet_nano teacher on procedural faces, batch 64,
Adam, normalised feature MSE:
- ``bare``: a plain torch loop: render the batch, teacher forward under no_grad, student forward, MSE, backward,
  step. Nothing else: no checkpoints, no logging, no feedback.
- ``fit_static``: factory.train.loop.fit with the feature-KD task and the procedural source, static sampling.
- ``fit_dynamic``: the same with SynthDistill's dynamic re-sampling (the main recipe).
The loops run interleaved in rounds (bare, static, dynamic, bare, ...) so drift of a noisy shared machine hits all
of them alike; the ratios come from one run. Also reported: the rendering and re-sampling time per step (the
source's share, from fit's own split), and the teacher's share of the bare loop's step.

Writes benchmarks/results/distill_throughput.json. Usage:
    python benchmarks/distill_throughput.py [--steps 20] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from run import cpu_name, save_results

from factory.data.sources import ProceduralSourceConfig, SourceContext
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.splits import unlabelled_batch
from factory.distill.methods.feature_kd import FeatureDistillTask
from factory.models.zoo import create_model
from factory.recipe import TrainConfig
from factory.train.loop import fit
from factory.train.tasks import model_input

BATCH = 64


def bare_loop(world: ProceduralFaceWorld, teacher: torch.nn.Module, steps: int, start: int) -> dict[str, float]:
    """Images/s of a plain loop, and the seconds per step spent rendering and in the teacher."""
    student = create_model("tinyfar_c").to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    render = teach = 0.0
    t0 = time.perf_counter()
    for step in range(start, start + steps):
        t = time.perf_counter()
        pixels = unlabelled_batch(world, BATCH, step, seed=0, split="distill")["images"]
        t_render = time.perf_counter()
        with torch.no_grad():
            target = F.normalize(teacher(model_input(teacher, pixels)))
        t_teacher = time.perf_counter()
        loss = F.mse_loss(F.normalize(student(model_input(student, pixels))), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        render += t_render - t
        teach += t_teacher - t_render
    seconds = time.perf_counter() - t0
    return {"images_per_second": steps * BATCH / seconds, "render_s": render / steps, "teacher_s": teach / steps}


def fit_loop(world: ProceduralFaceWorld, teacher: torch.nn.Module, steps: int, sampling: str) -> dict[str, float]:
    """Images/s of factory's fit on the same model and data, and its data/compute split per step."""
    student = create_model("tinyfar_c")
    cfg = TrainConfig(
        steps=steps,
        batch_size=BATCH,
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        schedule="constant",
        checkpoint_every=10**6,  # a checkpoint is not part of a step's cost
        tensorboard=False,
    )
    ctx = SourceContext(world=world, batch_size=BATCH, seed=0, split="distill", labelled=False)
    source = ProceduralSourceConfig(sampling=sampling).open(ctx)
    task = FeatureDistillTask(teacher, normalize=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(student, task, source, cfg, Path(tmp), progress=False)
    return {
        "images_per_second": result.images_per_second,
        "data_s": result.data_seconds,
        "compute_s": result.compute_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per loop and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    world = ProceduralFaceWorld()
    teacher = create_model("iresnet_nano").to(memory_format=torch.channels_last).eval().requires_grad_(False)

    runs: dict[str, list[dict[str, float]]] = {"bare": [], "fit_static": [], "fit_dynamic": []}
    bare_loop(world, teacher, 3, 0)  # warm-up: first calls allocate and pick kernels
    for r in range(args.rounds):
        runs["bare"].append(bare_loop(world, teacher, args.steps, start=1000 * (r + 1)))
        runs["fit_static"].append(fit_loop(world, teacher, args.steps, "static"))
        runs["fit_dynamic"].append(fit_loop(world, teacher, args.steps, "dynamic"))

    def mean(loop: str, key: str) -> float:
        return sum(x[key] for x in runs[loop]) / len(runs[loop])

    bare = mean("bare", "images_per_second")
    bare_step = BATCH / bare
    results = {
        "bare_images_per_second": bare,
        "fit_static_images_per_second": mean("fit_static", "images_per_second"),
        "fit_dynamic_images_per_second": mean("fit_dynamic", "images_per_second"),
        "fit_static_over_bare": mean("fit_static", "images_per_second") / bare,
        "fit_dynamic_over_bare": mean("fit_dynamic", "images_per_second") / bare,
        "render_ms_per_step_bare": 1000 * mean("bare", "render_s"),
        "source_ms_per_step_static": 1000 * mean("fit_static", "data_s"),
        "source_ms_per_step_dynamic": 1000 * mean("fit_dynamic", "data_s"),
        "resampling_cost_ms_per_step": 1000 * (mean("fit_dynamic", "data_s") - mean("fit_static", "data_s")),
        "teacher_ms_per_step": 1000 * mean("bare", "teacher_s"),
        "teacher_share_of_step": mean("bare", "teacher_s") / bare_step,
    }
    record = {
        "machine": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__},
        "setup": {
            "student": "tinyfar_c",
            "teacher": "iresnet_nano",
            "batch": BATCH,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "train": dataclasses.asdict(TrainConfig(optimizer="adam", lr=1e-3)) | {"tensorboard": False},
        },
        "rounds": runs,
        "results": results,
    }
    save_results("distill_throughput", record, digits=3)


if __name__ == "__main__":
    main()
