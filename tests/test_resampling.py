"""SynthDistill's dynamic re-sampling: the move, its scale in the procedural world, the feedback and its state."""

from __future__ import annotations

import math

import pytest
import torch

from factory.data.resampling import DynamicResampling, resample_w
from factory.data.sources import ProceduralSourceConfig, SourceContext
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.seeding import make_generator


def context(world: ProceduralFaceWorld, batch_size: int = 8) -> SourceContext:
    return SourceContext(world=world, batch_size=batch_size, seed=3, split="distill", labelled=False)


@pytest.fixture(scope="module")
def world() -> ProceduralFaceWorld:
    return ProceduralFaceWorld()


def test_the_move_is_c_times_s_times_spread_times_eps() -> None:
    w = torch.zeros(3, 5)
    agreement = torch.tensor([-1.0, 0.0, 1.0])  # s = 0, 1/2, 1
    spread = torch.tensor([[1.0, 2.0, 1.0, 1.0, 1.0]]).expand(3, 5)
    moved = resample_w(w, agreement, spread, 2.0, torch.Generator().manual_seed(7))
    eps = torch.randn(3, 5, generator=torch.Generator().manual_seed(7))
    expected = 2.0 * torch.tensor([[0.0], [0.5], [1.0]]) * spread * eps
    torch.testing.assert_close(moved, expected, rtol=0, atol=0)
    assert moved[0].abs().max() == 0  # a sample the student gets exactly wrong stays where it was


def test_stylegan_ws_move_together_across_layers() -> None:
    ws = torch.randn(2, 14, 6, generator=torch.Generator().manual_seed(0))
    moved = resample_w(ws, torch.tensor([0.5, 0.9]), 1.0, 1.0, torch.Generator().manual_seed(1))
    delta = moved - ws
    torch.testing.assert_close(delta, delta[:, :1, :].expand_as(delta))  # W, not W+
    assert delta.abs().sum() > 0


def _nearest_group(world: ProceduralFaceWorld, w: torch.Tensor) -> torch.Tensor:
    """Most likely group of each w under the world's per-group Gaussian (mean and spread of every coordinate)."""
    groups = torch.arange(len(world.group_names))
    means = world.mapping(torch.zeros(len(groups), world.z_dim), groups)
    spreads = world.w_spread(groups)
    live = (spreads > 0).all(0)  # coordinates some group does not vary carry no likelihood
    z = (w[:, None, live] - means[None, :, live]) / spreads[None, :, live]
    nll = 0.5 * (z**2).sum(-1) + spreads[:, live].log().sum(-1)[None, :]
    return nll.argmin(1)


def test_a_c1_jump_keeps_a_procedural_face_in_its_group(world: ProceduralFaceWorld) -> None:
    faces = ProceduralSourceConfig().open(context(world, 256)).faces
    fresh = faces.fresh(0)
    w, groups = fresh["w"], fresh["groups"]
    assert (_nearest_group(world, w) == groups).float().mean() > 0.97
    full = torch.ones(len(w))  # s = 1: the largest move re-sampling makes
    moved = resample_w(w, full, faces.spread(groups), 1.0, torch.Generator().manual_seed(0))
    assert (_nearest_group(world, moved) == groups).float().mean() > 0.95
    # The jump is about a typical identity's distance from its group mean, less than between two identities.
    jump = ((moved - w) / faces.spread(groups).clamp_min(1e-12)).norm(dim=1).median()
    other = torch.roll(w, 1, 0)  # same-group pairs: groups are dealt round robin, so compare within a group
    same = groups == torch.roll(groups, 1, 0)
    between = ((w - other)[same] / faces.spread(groups)[same].clamp_min(1e-12)).norm(dim=1).median()
    assert jump < between / math.sqrt(2) * 1.1
    # An unscaled N(0, I) step, as in a StyleGAN W, would throw most faces out of their group here.
    raw = resample_w(w, full, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert (_nearest_group(world, raw) == groups).float().mean() < 0.8


def test_fresh_and_resampled_steps_alternate_with_feedback(world: ProceduralFaceWorld) -> None:
    source = ProceduralSourceConfig(sampling="dynamic").open(context(world))
    static = ProceduralSourceConfig().open(context(world))
    first = source.batch(0)
    assert torch.equal(first["pixels"], static.batch(0)["pixels"]) and not first["resampled"].any()
    with pytest.raises(RuntimeError, match="no agreement from step 0"):
        source.batch(1)
    source.feedback(0, first, {"agreement": torch.linspace(-1, 1, 8)})
    second = source.batch(1)
    assert second["resampled"].all() and torch.equal(second["groups"], first["groups"])
    gen = make_generator("resample", 3, "distill", 1)
    expected = resample_w(first["w"], torch.linspace(-1, 1, 8), world.w_spread(first["groups"]), 1.0, gen)
    torch.testing.assert_close(second["w"], expected, rtol=0, atol=0)
    assert not torch.equal(second["pixels"][-1], first["pixels"][-1])  # s = 1: that face moved
    source.feedback(1, second, {"agreement": torch.zeros(8)})  # odd steps feed nothing back
    assert source.state_dict() == {"pending": None}


def test_pending_latents_survive_a_resume(world: ProceduralFaceWorld) -> None:
    cfg = ProceduralSourceConfig(sampling="dynamic", resample_scale=0.5)
    source = cfg.open(context(world))
    batch = source.batch(0)
    source.feedback(0, batch, {"agreement": torch.full((8,), 0.3)})
    restored = cfg.open(context(world))
    restored.load_state_dict(source.state_dict())
    assert torch.equal(restored.batch(1)["pixels"], source.batch(1)["pixels"])


def test_a_method_without_agreement_is_refused(world: ProceduralFaceWorld) -> None:
    source = ProceduralSourceConfig(sampling="dynamic").open(context(world))
    with pytest.raises(ValueError, match="per-sample student-teacher agreement.*sampling: static"):
        source.feedback(0, source.batch(0), {})


def test_dynamic_sampling_is_refused_for_labelled_training(world: ProceduralFaceWorld) -> None:
    ctx = SourceContext(world=world, batch_size=8, seed=0, split="teacher", labelled=True)
    with pytest.raises(ValueError, match="labelled source is static"):
        ProceduralSourceConfig(sampling="dynamic").open(ctx)
    assert "dynamic re-sampling, c = 1" in ProceduralSourceConfig(sampling="dynamic").describe(context(world))


def test_dynamic_resampling_checks_its_scale() -> None:
    with pytest.raises(ValueError, match="resample_scale must be > 0"):
        DynamicResampling(faces=None, scale=0.0, seed=0, split="x")  # type: ignore[arg-type]
