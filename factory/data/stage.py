"""The data stage: the benchmark (procedural or the user's), calibration faces and previews, rendered once."""

from __future__ import annotations

from typing import Any

import numpy as np

from factory.data.benchmark import build_benchmark, draw_cross_impostors
from factory.data.calibration import draw_calibration, prove_apart, refuse_benchmark_files
from factory.data.formats.benchmarks import load_real_benchmark
from factory.data.preview import write_previews
from factory.data.world.renderer import make_world
from factory.files import atomic_path
from factory.pipeline.stage import Stage, StageContext, StageResult

BENCHMARK_FILE = "benchmark.npz"
CROSS_FILE = "cross_impostors.npz"
CALIBRATION_FILE = "calibration.npz"


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
    if not cfg.benchmark:  # procedural: cross-group impostors too (among its images), for the FMR heatmap
        cross = draw_cross_impostors(bench, max(10, cfg.benchmark_pairs_per_group // 6), seed)
        cross.save(ctx.work_dir / CROSS_FILE)
        cross_pairs = len(cross.cells)
    calibration_cfg = cfg.calibration
    refuse_benchmark_files(calibration_cfg.source, cfg.benchmark)
    seed_calibration = seed if calibration_cfg.seed is None else calibration_cfg.seed
    calibration = draw_calibration(calibration_cfg, world, seed_calibration)
    # Refused before anything is written: INT8 ranges must never be fitted on a benchmark face.
    apart = prove_apart(calibration, bench.images, calibration_cfg.source, cfg.benchmark)
    with atomic_path(ctx.work_dir / CALIBRATION_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=calibration.images, groups=calibration.groups)
    previews = write_previews(
        world, ctx.work_dir / "previews", identities=cfg.preview_identities, samples=cfg.preview_samples, seed=seed
    )
    return StageResult(
        {
            "groups": list(bench.group_names),
            "benchmark_pairs": int(len(bench.issame)),
            "benchmark_images": int(len(bench.images)),
            "cross_group_impostor_pairs": cross_pairs,
            "calibration_images": int(len(calibration.images)),
            "calibration": {
                "source": calibration.description,
                "balance": calibration_cfg.balance,
                "seed": seed_calibration,
                "groups": calibration.group_counts(world.group_names),
                "apart_from_benchmark": apart,
            },
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
        f"{m['calibration_images']} calibration faces ({m['calibration']['source']}), "
        f"previews of {', '.join(m['groups'])}"
    ),
)
