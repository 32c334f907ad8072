"""Helpers shared by the test modules."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DEMO_RECIPE = ROOT / "recipes" / "tinyfar_synthdistill.yaml"
# The demo recipe shrunk to seconds: the mechanism end to end, not the quality (the demo checks that).
TINY_TARGETS = ("local-cpu-openvino", "local-cpu-onnxruntime")
TINY_BUILD = [
    "data.benchmark_pairs_per_group=40",
    "data.calibration.images=32",
    "data.preview_identities=2",
    "data.preview_samples=2",
    "teacher.identities_per_group=4",
    "teacher.train.steps=12",
    "teacher.train.batch_size=16",
    "teacher.train.warmup_steps=2",
    "distill.train.steps=12",
    "distill.train.batch_size=16",
    "distill.train.checkpoint_every=4",
    "validate.latency_warmup=2",
    "validate.latency_repeats=5",
    "validate.benchmark_app_seconds=1",
    # A dozen steps cannot make a good model: these gates check the mechanism, the demo checks the quality.
    "gates.min_accuracy=0.3",
    "gates.max_std=0.5",
    "gates.max_int8_drop=0.5",
    "gates.max_int8_group_drop=0.5",
    "gates.min_int8_cosine=0.5",
    "gates.min_int8_p1_cosine=0.5",
    "gates.max_latency_ms=1000",
    # the shipped local targets (same names) with TINY's measurement settings: 30 s less per deploy stage run
    "deploy.targets=[" + ", ".join(str(ROOT / "tests" / "targets" / f"{t}.yaml") for t in TINY_TARGETS) + "]",
]


def randomise_stats(model: nn.Module, seed: int = 0, prelu_max: float = 0.5) -> None:
    """Non-trivial BatchNorm statistics and PReLU slopes, as after training (fresh ones make BN an identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) * prelu_max)


def encode_png(image_chw: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``3×H×W`` image."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_chw.transpose(1, 2, 0))).save(buf, format="PNG")
    return buf.getvalue()


def procedural_bin(path: Path, pairs: int = 40, split: str = "helper-bin", seed: int = 0) -> Path:
    """An insightface-format verification ``.bin`` of procedural faces: 10 folds, half genuine, half impostor."""
    from factory.data.benchmark import pair_layout
    from factory.data.formats.verification_bin import VerificationBin
    from factory.data.world.renderer import ProceduralFaceWorld
    from factory.data.world.seeding import make_generator
    from factory.data.world.splits import identity_set

    world = ProceduralFaceWorld(seed=0)
    layout, issame = pair_layout(pairs, np.random.default_rng(seed))
    ids = identity_set(world, split, per_group=int(layout.max()) + 1, seed=seed)
    index = torch.from_numpy(layout.reshape(-1))
    faces = world.synthesis(world.mapping(ids.z[index], ids.group[index]), make_generator(split, seed)).numpy()
    VerificationBin([encode_png(face) for face in faces], issame).save(path)
    return path


@contextlib.contextmanager
def holding_build_lock(run_dir: Path) -> Iterator[int]:
    """Another process holds ``run_dir``'s build lock for the ``with`` block, as a build does; yields its pid."""
    code = (
        "import sys, time; from pathlib import Path; from factory.pipeline.lock import run_dir_lock\n"
        "with run_dir_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
