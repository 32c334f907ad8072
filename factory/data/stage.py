"""The data stage: the benchmark (procedural or the user's), calibration faces and previews, rendered once."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from factory.data.benchmark import build_benchmark, build_cross_impostors
from factory.data.formats.benchmarks import load_real_benchmark
from factory.data.preview import write_previews
from factory.data.world.renderer import ProceduralFaceWorld, make_world
from factory.data.world.splits import unlabelled_batch
from factory.files import atomic_path
from factory.pipeline.stage import Stage, StageContext, StageResult

BENCHMARK_FILE = "benchmark.npz"
CROSS_FILE = "cross_impostors.npz"
CALIBRATION_FILE = "calibration.npz"
CALIBRATION_SPLIT = "calibration"


def render_unlabelled(world: ProceduralFaceWorld, n: int, seed: int, split: str, batch_size: int = 128) -> np.ndarray:
    """``n`` uint8 faces of fresh identities from ``split`` (balanced over groups), deterministic in ``seed``."""
    chunks = []
    for step in range((n + batch_size - 1) // batch_size):
        chunks.append(unlabelled_batch(world, batch_size, step, seed, split=split)["images"])
    return torch.cat(chunks)[:n].numpy()


def build_data(ctx: StageContext) -> StageResult:
    """Write ``benchmark.npz`` (RFW-like pairs per group), ``calibration.npz`` and ``previews/<group>.png``."""
    cfg, seed = ctx.config["data"], ctx.config["seed"]
    world = make_world(cfg.world)
    if cfg.benchmark:
        bench = load_real_benchmark(cfg.benchmark)
    else:
        bench = build_benchmark(world, pairs_per_group=cfg.benchmark_pairs_per_group, seed=seed, progress=ctx.progress)
    bench.save(ctx.work_dir / BENCHMARK_FILE)
    cross_pairs = 0
    if not cfg.benchmark:  # procedural: cross-group impostors too, for the FMR heatmap
        cross = build_cross_impostors(world, max(10, cfg.benchmark_pairs_per_group // 6), seed)
        cross.save(ctx.work_dir / CROSS_FILE)
        cross_pairs = len(cross.cells)
    # Calibration identities come from their own split: INT8 ranges never see a benchmark face.
    calibration = render_unlabelled(world, cfg.calibration_images, seed, CALIBRATION_SPLIT)
    with atomic_path(ctx.work_dir / CALIBRATION_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=calibration)
    previews = write_previews(
        world, ctx.work_dir / "previews", identities=cfg.preview_identities, samples=cfg.preview_samples, seed=seed
    )
    return StageResult(
        {
            "groups": list(bench.group_names),
            "benchmark_pairs": int(len(bench.issame)),
            "benchmark_images": int(len(bench.images)),
            "cross_group_impostor_pairs": cross_pairs,
            "calibration_images": int(len(calibration)),
            "previews": [p.name for p in previews],
        }
    )


def load_calibration(path: Any) -> np.ndarray:
    """uint8 calibration images written by :func:`build_data`."""
    with np.load(path, allow_pickle=False) as data:
        if "images" not in data:
            raise ValueError(f"{path} has no 'images' array (expected a factory calibration set)")
        return data["images"]


STAGE = Stage(
    name="data",
    needs=(),
    config=lambda r: {"data": r.data, "seed": r.seed},
    run=build_data,
    summary=lambda m: (
        f"{len(m['groups'])} groups, {m['benchmark_pairs']} benchmark pairs, "
        f"{m['calibration_images']} calibration faces, previews of {', '.join(m['groups'])}"
    ),
)
