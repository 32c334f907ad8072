#!/usr/bin/env python3
"""Low-bit study (seed 004, Tables I-II): W8A8, W6A6 and W4A8 on the world with known bias, calibrated on synthetic
or on "real" faces, per group, each paired against FP32.

The student and benchmark come from a build of recipes/known_bias.yaml (``--run DIR``: its distill and data stages;
gamma is the group made harder by a declared amount). Fake quantization, in torch, at any bit width: weights per
output channel, symmetric, range max |w|; activations (the input of every convolution and linear layer, the image
included) per tensor, asymmetric, range the global min/max over the calibration faces: the factory's PTQ defaults
(per-channel weights, global min/max activation ranges) without NNCF, which quantizes to 8 bits only. Plain
rounding, no bias correction. Two calibration sets of ``--calibration`` faces, equal per group, neither from the
benchmark's identities:

- synthetic: fresh identities of the split ``calibration`` (what the build calibrates on);
- real: labelled faces of the teacher's own training identities (split ``teacher``), standing in for a real training
  set, which seed 004 calibrates with.

Every row is measured on the whole benchmark without flip with one set of bootstrap draws over subjects: per-group
accuracy with 95 % intervals, mean, STD, SER, the paired change against FP32 (mean, STD and per group), and the
embedding cosine to FP32 on 50 faces per group. Writes benchmarks/results/lowbit_study.json and lowbit_study.png.

Usage: python benchmarks/lowbit_study.py --run runs/known_bias [--calibration 300]
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from distill_study import arm_figures, paired, plot, table
from quantization_fidelity import finished_stage
from run import cpu_name, save_results
from torch import nn

from factory.compress.stage import drift_faces
from factory.data.benchmark import PairBenchmark
from factory.data.calibration import CALIBRATION_SPLIT
from factory.data.stage import BENCHMARK_FILE
from factory.data.world.renderer import make_world
from factory.data.world.splits import identity_set, labelled_batch, unlabelled_batch
from factory.distill.stage import STUDENT_FILE
from factory.evaluate.benchmark_eval import embed_images, evaluate_embeddings, resample_benchmark
from factory.export.parity import cosine_statistics, row_agreement
from factory.models.checkpoint import load_model
from factory.recipe import load_recipe
from factory.runtime.preprocess import to_model_input_numpy
from factory.runtime.runners import embed_uint8, torch_runner
from factory.train.stage import TEACHER_SPLIT

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
BITS = (("W8A8", 8, 8), ("W6A6", 6, 6), ("W4A8", 4, 8))


def fake_quantized(model: nn.Module, calibration: torch.Tensor, w_bits: int, a_bits: int) -> nn.Module:
    """A copy of ``model`` whose layers see ``a_bits`` inputs and hold ``w_bits`` weights (see the module docstring)."""
    quantized = copy.deepcopy(model).eval()
    layers = [m for m in quantized.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    top = 2 ** (w_bits - 1) - 1
    with torch.no_grad():
        for layer in layers:
            w = layer.weight
            scale = (w.abs().flatten(1).amax(1).clamp_min(1e-12) / top).view(-1, *[1] * (w.dim() - 1))
            w.copy_((w / scale).round().clamp(-top, top) * scale)
    ranges: dict[nn.Module, list[float]] = {layer: [np.inf, -np.inf] for layer in layers}

    def observe(layer: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        low, high = ranges[layer]
        ranges[layer] = [min(low, float(args[0].min())), max(high, float(args[0].max()))]

    hooks = [layer.register_forward_pre_hook(observe) for layer in layers]
    with torch.no_grad():
        for chunk in calibration.split(64):
            quantized(chunk)
    for hook in hooks:
        hook.remove()
    levels = 2**a_bits - 1
    for layer in layers:
        low, high = min(ranges[layer][0], 0.0), max(ranges[layer][1], 0.0)  # zero exactly representable
        scale = max(high - low, 1e-12) / levels
        zero = round(-low / scale)

        def quantize(module: nn.Module, args: tuple[torch.Tensor, ...], s: float = scale, z: int = zero) -> tuple:
            return (((args[0] / s).round() + z).clamp(0, levels).sub(z).mul(s), *args[1:])

        layer.register_forward_pre_hook(quantize)
    return quantized


def calibration_sets(recipe: Any, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` synthetic and ``n`` "real" uint8 faces of the recipe's world, equal per group."""
    world = make_world(recipe.data.world)
    synthetic = unlabelled_batch(world, n, 0, seed, split=CALIBRATION_SPLIT)["images"]
    teacher_ids = identity_set(world, TEACHER_SPLIT, recipe.teacher.identities_per_group, seed)
    groups = len(world.group_names)
    real, by_group = [], [[] for _ in range(groups)]
    step = 0
    while min(len(b) for b in by_group) < n // groups:  # labelled draws are uniform over identities: fill each group
        images, _, group = labelled_batch(world, teacher_ids, 256, step, seed + 1)
        for image, g in zip(images, group.tolist(), strict=True):
            if len(by_group[g]) < n // groups:
                by_group[g].append(image)
        step += 1
    real = torch.stack([image for bucket in by_group for image in bucket])
    return {"synthetic": synthetic.numpy(), "real": real.numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a build directory of recipes/known_bias.yaml (data + distill)")
    parser.add_argument("--calibration", type=int, default=300, help="faces per calibration set")
    parser.add_argument("--replicates", type=int, default=1000, help="bootstrap draws (shared by every row)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    run_dir = Path(args.run)
    recipe = load_recipe(ROOT / "recipes" / "known_bias.yaml")
    student = load_model(finished_stage(run_dir, "distill") / STUDENT_FILE).eval()
    bench = PairBenchmark.load(finished_stage(run_dir, "data") / BENCHMARK_FILE)
    resampling = resample_benchmark(bench, replicates=args.replicates)
    rows, _ = drift_faces(bench, 50)
    drift = to_model_input_numpy(bench.images[rows], student.contract)
    faces = calibration_sets(recipe, args.calibration, 0)
    sets = {source: to_model_input_numpy(images, student.contract) for source, images in faces.items()}

    def evaluate(model: nn.Module) -> Any:
        runner = torch_runner(model, threads=2)
        embeddings = embed_images(embed_uint8(runner), bench.images, batch_size=64, flip=False)
        return evaluate_embeddings(embeddings, bench, resampling=resampling), runner

    reference, fp32_runner = evaluate(student)
    results, figures, cosines = {"fp32": reference}, {"fp32": arm_figures(reference)}, {}
    for label, w_bits, a_bits in BITS:
        for source, inputs in sets.items():
            name = f"{label}_{source}"
            model = fake_quantized(student, torch.from_numpy(inputs), w_bits, a_bits)
            results[name], runner = evaluate(model)
            figures[name] = arm_figures(results[name])
            cosines[name] = cosine_statistics(*row_agreement(fp32_runner, runner, drift))
            mean, cosine = 100 * figures[name]["mean"], cosines[name]["mean_cosine"]
            print(f"{name}: mean {mean:.2f} cosine to FP32 {cosine:.4f}", flush=True)
    comparisons, flat = {}, {}
    for name, result in results.items():
        flat[f"{name}_mean_pct"] = 100 * figures[name]["mean"]
        flat[f"{name}_std_pct"] = 100 * figures[name]["std"]
        if name == "fp32":
            continue
        comparisons[f"{name}_vs_fp32"] = paired(result, reference, "fp32")
        flat[f"{name}_vs_fp32_mean_delta_pct"] = 100 * comparisons[f"{name}_vs_fp32"]["mean"]["delta"]
    record = {
        "machine": cpu_name(),
        "run_dir": str(run_dir),
        "benchmark_pairs_per_group": int(len(bench.issame) // len(bench.group_names)),
        "calibration_faces": args.calibration,
        "bootstrap_replicates": args.replicates,
        "results": flat,
        "arms": figures,
        "cosine_to_fp32": cosines,
        "comparisons": comparisons,
    }
    save_results("lowbit_study", record, digits=2)
    plot(figures, RESULTS / "lowbit_study.png", "Low-bit study on the known-bias world (gamma made harder)")
    print(table(record))


if __name__ == "__main__":
    main()
