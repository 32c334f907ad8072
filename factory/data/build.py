"""The data stage: render the benchmark, the calibration set and previews from the procedural world once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from factory.data.benchmark import PairBenchmark, build_benchmark, build_cross_impostors
from factory.data.images import decode_aligned
from factory.data.preview import write_previews
from factory.data.procedural import ProceduralFaceWorld, load_taxonomy, unlabelled_batch
from factory.files import atomic_path
from factory.recipe import WorldConfig

if TYPE_CHECKING:
    from factory.pipeline import StageContext

BENCHMARK_FILE = "benchmark.npz"
CROSS_FILE = "cross_impostors.npz"
CALIBRATION_FILE = "calibration.npz"
CALIBRATION_SPLIT = "calibration"


def make_world(cfg: WorldConfig) -> ProceduralFaceWorld:
    """The procedural world a recipe describes."""
    return ProceduralFaceWorld(load_taxonomy(cfg.taxonomy), seed=cfg.seed)


def render_unlabelled(world: ProceduralFaceWorld, n: int, seed: int, split: str, batch_size: int = 128) -> np.ndarray:
    """``n`` uint8 faces of fresh identities from ``split`` (balanced over groups), deterministic in ``seed``."""
    chunks = []
    for step in range((n + batch_size - 1) // batch_size):
        chunks.append(unlabelled_batch(world, batch_size, step, seed, split=split)["images"])
    return torch.cat(chunks)[:n].numpy()


def build_data(ctx: StageContext) -> dict[str, Any]:
    """Write ``benchmark.npz`` (RFW-like pairs per group), ``calibration.npz`` and ``previews/<group>.png``."""
    cfg, seed = ctx.recipe.data, ctx.recipe.seed
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
    return {
        "groups": list(bench.group_names),
        "benchmark_pairs": int(len(bench.issame)),
        "benchmark_images": int(len(bench.images)),
        "cross_group_impostor_pairs": cross_pairs,
        "calibration_images": int(len(calibration)),
        "previews": [p.name for p in previews],
    }


def load_real_benchmark(path: str) -> PairBenchmark:
    """A user's benchmark as pairs with groups.

    A verification ``.bin`` is one group named after the file; an RFW root has a group per race.
    """
    from factory.data.formats.rfw import load_rfw
    from factory.data.formats.verification_bin import VerificationBin

    source = Path(path)
    if source.is_dir():
        return load_rfw(source)
    if source.suffix == ".npz":
        return PairBenchmark.load(source)
    if source.suffix in (".csv", ".txt", ".tsv"):
        return load_pairs_list(source)
    data = VerificationBin.load(source)
    images = np.stack([decode_aligned(b, f"{source}: entry {i}") for i, b in enumerate(data.images)])
    return PairBenchmark(
        images=images,
        issame=data.issame,
        groups=np.zeros(len(data.issame), dtype=np.int64),
        subjects=np.arange(len(images)),  # a .bin has no identities: every image its own subject
        group_names=(source.stem.removesuffix("_test"),),
    )


def load_pairs_list(path: Path) -> PairBenchmark:
    """A pairs list: ``image1,image2,issame[,group]`` per line (TAB also accepted), aligned 112×112 images."""
    images, issame, groups, names = [], [], [], {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = [f.strip() for f in line.replace("\t", ",").split(",")]
        if not line.strip() or line.startswith("#"):
            continue
        if len(fields) not in (3, 4) or fields[2].lower() not in ("0", "1", "true", "false"):
            raise ValueError(f"{path}:{number}: expected image1,image2,issame(0/1)[,group], got {line!r}")
        for name in fields[:2]:
            image = Path(name) if Path(name).is_absolute() else path.parent / name
            if not image.is_file():
                raise FileNotFoundError(f"{path}:{number}: {image} does not exist")
            images.append(decode_aligned(image, f"{path}:{number}: {image}"))
        issame.append(fields[2].lower() in ("1", "true"))
        groups.append(names.setdefault(fields[3] if len(fields) == 4 else "all", len(names)))
    if not issame:
        raise ValueError(f"{path}: no pairs")
    return PairBenchmark(
        images=np.stack(images),
        issame=np.array(issame),
        groups=np.array(groups),
        subjects=np.arange(len(images)),
        group_names=tuple(names),
    )


def load_calibration(path: Any) -> np.ndarray:
    """uint8 calibration images written by :func:`build_data`."""
    with np.load(path, allow_pickle=False) as data:
        if "images" not in data:
            raise ValueError(f"{path} has no 'images' array (expected a factory calibration set)")
        return data["images"]
