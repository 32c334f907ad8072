"""The teacher-embedding cache: static data embedded once per image and flip, and results identical without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from distill_toys import TinyFaceNet
from helpers import randomise_stats
from torch import nn

from factory.data.sources import (
    ProceduralSetSourceConfig,
    ProceduralSourceConfig,
    RealSyntheticSourceConfig,
    SourceContext,
)
from factory.data.world.renderer import ProceduralFaceWorld
from factory.distill.methods import DISTILL_METHODS, MethodContext
from factory.distill.teacher_cache import CHUNK, TeacherEmbeddings
from factory.models.zoo import create_model
from factory.recipe import TrainConfig
from factory.train.loop import RESUME_FILE, fit
from factory.train.tasks import model_input

LABEL_FREE = [name for name in DISTILL_METHODS.names() if not getattr(DISTILL_METHODS.get(name), "labelled", False)]


@pytest.fixture(scope="module")
def world() -> ProceduralFaceWorld:
    return ProceduralFaceWorld()


def teacher_of(name: str) -> nn.Module:
    torch.manual_seed(0)
    teacher = TinyFaceNet() if name == "toy" else create_model(name)
    randomise_stats(teacher)  # trained-looking BatchNorm statistics: a fresh BN in eval mode is nearly an identity
    return teacher.eval()


class Counted:
    """Counts the forwards a module runs and the images they take."""

    def __init__(self, module: nn.Module) -> None:
        self.calls = self.images = 0
        module.register_forward_hook(self.count)

    def count(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.calls += 1
        self.images += len(inputs[0])


@pytest.mark.parametrize("name", ["toy", "iresnet_nano"])
def test_a_cached_embedding_is_a_fresh_forward_bit_for_bit(name: str) -> None:
    teacher = teacher_of(name)
    images = torch.randint(0, 256, (20, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    cache = TeacherEmbeddings(teacher)
    cache({"pixels": images[:12], "keys": torch.arange(12)})
    # Two cached images among unkeyed ones and a new keyed one, at other positions in a batch of another size.
    batch = {
        "pixels": torch.cat([images[[5, 3]], images[14:18], images[[13]]]),
        "keys": torch.tensor([5, 3, -1, -1, -1, -1, 13]),
    }
    out = cache(batch)
    fresh = TeacherEmbeddings(teacher, capacity_mb=0)
    for row, image in ((0, 5), (1, 3), (6, 13)):
        assert torch.equal(out[row], fresh.canonical(images[[image]])[0]), (row, image)
    report = cache.report()
    assert (report["hits"], report["computed"], report["unkeyed"], report["entries"]) == (2, 13, 4, 13)
    # Without a cache every keyed sample is embedded anew, in the same canonical forward: the same bits.
    fresh({"pixels": images[:12], "keys": torch.arange(12)})
    assert torch.equal(fresh(batch), out) and fresh.report()["entries"] == 0
    # Unkeyed samples get one plain forward of them together, as before keys existed; no keys at all, the same.
    with torch.no_grad():
        plain = teacher(model_input(teacher, images[14:18]))
    assert torch.equal(out[2:6], plain) and torch.equal(cache({"pixels": images[14:18]}), plain)


def test_the_canonical_forward_never_depends_on_the_other_images() -> None:
    teacher = teacher_of("iresnet_nano")
    gen = torch.Generator().manual_seed(2)
    image = torch.randint(0, 256, (1, 3, 112, 112), dtype=torch.uint8, generator=gen)
    cache = TeacherEmbeddings(teacher, capacity_mb=0)
    alone = cache.canonical(image)[0]
    for position, others in ((0, 20), (7, CHUNK - 1), (15, 30)):
        pixels = torch.randint(0, 256, (others + 1, 3, 112, 112), dtype=torch.uint8, generator=gen)
        pixels[position] = image[0]
        assert torch.equal(cache.canonical(pixels)[position], alone), (position, others)


def test_a_fixed_synthetic_set_never_gets_a_real_images_embedding(world: ProceduralFaceWorld) -> None:
    """Both parts of a mix are static sets keyed from image 0: keys offset apart, every embedding is its own image's."""
    cfg = RealSyntheticSourceConfig(
        real=ProceduralSetSourceConfig(identities_per_group=2, images_per_identity=2),
        synthetic=ProceduralSetSourceConfig(identities_per_group=1, images_per_identity=2),
        real_share=0.5,
    )
    source = cfg.open(SourceContext(world=world, batch_size=16, seed=0, split="distill", labelled=False))
    teacher = teacher_of("toy")
    cache, fresh = TeacherEmbeddings(teacher), TeacherEmbeddings(teacher, capacity_mb=0)
    keys: set[int] = set()
    for step in range(6):
        batch = source.batch(step)
        keys |= set(batch["keys"].tolist())
        assert torch.equal(cache(batch), fresh.canonical(batch["pixels"])), step
    report = cache.report()
    assert report["entries"] == len(keys) and report["hits"] > report["computed"]  # both sets came back, cached


def distill(
    method: str, world: ProceduralFaceWorld, cache_mb: float, work: Path, steps: int = 16
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]], Counted, dict[str, Any]]:
    """A tiny student distilled on a repeated static set (4 identities x 2 images, 16 keys), 8 images a step."""
    teacher = teacher_of("toy")
    student = TinyFaceNet()
    counted = Counted(teacher)
    ctx = SourceContext(world=world, batch_size=8, seed=0, split="distill", labelled=False)
    source = ProceduralSetSourceConfig(identities_per_group=1, images_per_identity=2).open(ctx)
    task = DISTILL_METHODS.get(method)().build(
        MethodContext(teacher=teacher, student=student, seed=0, teacher_cache_mb=cache_mb)
    )
    cfg = TrainConfig(steps=steps, batch_size=8, optimizer="sgd", lr=0.05, tensorboard=False)
    result = fit(student, task, source, cfg, work, progress=False, log_every=1)
    return student.state_dict(), result.history, counted, task.report()["teacher_cache"]


@pytest.mark.parametrize("method", LABEL_FREE)
def test_a_repeated_static_set_calls_the_teacher_less_and_trains_the_same_student(
    method: str, world: ProceduralFaceWorld, tmp_path: Path
) -> None:
    cached, history, calls, report = distill(method, world, 1024, tmp_path / "cached")
    uncached, history_uncached, calls_uncached, report_uncached = distill(method, world, 0, tmp_path / "uncached")
    assert all(torch.equal(cached[k], uncached[k]) for k in cached)
    assert history == history_uncached
    assert calls_uncached.calls == 16 and calls.calls < 10  # one 16-image chunk a step, until every key is cached
    assert report["computed"] == report["entries"] <= 16 and report["hits"] + report["computed"] == 16 * 8
    # Without a cache only an image drawn twice in one batch is embedded once.
    assert report_uncached["entries"] == 0 and report_uncached["computed"] > 6 * report["computed"]
    assert report_uncached["hits"] + report_uncached["computed"] == 128 and report_uncached["megabytes"] == 0


class Crash:
    """Raises at one step: a run interrupted after its last checkpoint."""

    def __init__(self, source: Any, at: int) -> None:
        self.source, self.at = source, at

    def batch(self, step: int) -> dict[str, Any]:
        if step == self.at:
            raise KeyboardInterrupt
        return self.source.batch(step)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)


def test_a_resumed_mix_recomputes_its_cache_and_trains_the_same_student(
    world: ProceduralFaceWorld, tmp_path: Path
) -> None:
    real = ProceduralSetSourceConfig(identities_per_group=1, images_per_identity=2)
    cfg = RealSyntheticSourceConfig(real=real, synthetic=ProceduralSourceConfig(sampling="dynamic"), real_share=0.7)
    ctx = SourceContext(world=world, batch_size=8, seed=0, split="distill", labelled=False)
    train = TrainConfig(steps=6, batch_size=8, optimizer="sgd", lr=0.05, checkpoint_every=3, tensorboard=False)

    def run(work: Path, crash_at: int | None = None) -> tuple[nn.Module, Any, Any]:
        teacher, student = teacher_of("toy"), TinyFaceNet()
        task = DISTILL_METHODS.get("feature_kd")().build(MethodContext(teacher=teacher, student=student, seed=0))
        source = cfg.open(ctx)
        fit(student, task, source if crash_at is None else Crash(source, crash_at), train, work, progress=False)
        return student, task, source

    whole, _, source = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", crash_at=4)
    assert (tmp_path / "resumed" / RESUME_FILE).is_file()  # after step 3: between a fresh and a re-sampled step
    resumed, task, resumed_source = run(tmp_path / "resumed")
    assert all(
        torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True)
    )
    assert resumed_source.report() == source.report()  # the composition counts the steps before the interruption
    assert task.report()["teacher_cache"]["computed"] > 0  # the resumed run started with an empty cache
