#!/usr/bin/env python3
"""Throughput benchmarks for the vertical slice; writes benchmarks/results/<host>.json and prints a table.

- procedural generator: images/s rendered (what feeds online distillation)
- teacher training step (iresnet_nano + CosFace), distillation step (teacher forward + tinyfar_a step): images/s
The generator must outrun training several times over, or rendering, not learning, would bound distillation.

Usage: python benchmarks/run.py [--threads 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.splits import identity_set, labelled_batch, unlabelled_batch
from factory.distill.methods.feature_kd import FeatureDistillTask
from factory.files import write_json
from factory.models.heads import create_head
from factory.models.zoo import create_model
from factory.train.tasks import MarginClassificationTask


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def save_results(name: str, record: dict, digits: int = 1) -> Path:
    """Write ``record`` to ``benchmarks/results/<name>.json`` and print its ``results`` one per line."""
    out = Path(__file__).parent / "results" / f"{name}.json"
    write_json(out, record)
    width = max(map(len, record["results"])) + 4
    for key, value in record["results"].items():
        print(f"{key:<{width}}{value:>12.{digits}f}")
    print(f"written to {out}")
    return out


def rate(fn, images_per_call: int, seconds: float, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += images_per_call
    return n / (time.perf_counter() - start)


def train_step(model, task, batch_fn):
    model.train()
    opt = torch.optim.SGD(list(model.parameters()) + task.parameters(), lr=0.01, momentum=0.9)
    model.to(memory_format=torch.channels_last)
    step = [0]

    def run():
        out = task(model, batch_fn(step[0]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        step[0] += 1

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = ProceduralFaceWorld(seed=0)
    b = args.batch
    results = {}
    counter = iter(range(10**9))
    results["generator_images_per_s"] = rate(lambda: unlabelled_batch(world, 128, next(counter), 0), 128, args.seconds)

    pre = [unlabelled_batch(world, b, s, 0)["images"] for s in range(4)]
    ids = identity_set(world, "bench", per_group=100, seed=0)
    teacher = create_model("iresnet_nano")
    head = create_head("cosface", 512, len(ids.keys))
    labelled = [labelled_batch(world, ids, b, s, 0) for s in range(4)]
    results["teacher_train_images_per_s"] = rate(
        train_step(
            teacher,
            MarginClassificationTask(head),
            lambda s: {"pixels": labelled[s % 4][0], "labels": labelled[s % 4][1]},
        ),
        b,
        args.seconds,
    )
    for student in ("tinyfar_a", "tinyfar_c", "mobilefacenet"):
        results[f"distill_{student}_images_per_s"] = rate(
            train_step(create_model(student), FeatureDistillTask(teacher.eval()), lambda s: {"pixels": pre[s % 4]}),
            b,
            args.seconds,
        )
    for student in ("tinyfar_a", "tinyfar_c"):
        results[f"generator_over_{student}_distill"] = (
            results["generator_images_per_s"] / results[f"distill_{student}_images_per_s"]
        )
    record = {
        "machine": {
            "host": platform.node(),
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "batch": b,
        "results": results,
    }
    save_results("throughput", record)


if __name__ == "__main__":
    main()
