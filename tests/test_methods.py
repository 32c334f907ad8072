"""The margin-loss baseline (a distill method trained on labels, no teacher) and fairness-adaptive group balance."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from distill_toys import TinyFaceNet

from factory.data.group_balance import balance_shares
from factory.data.sources import (
    GroupBalancer,
    MixSourceConfig,
    ProceduralSourceConfig,
    SourceContext,
    StatelessSource,
)
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.seeding import make_generator
from factory.data.world.splits import group_counts, unlabelled_batch
from factory.distill.methods import DISTILL_METHODS, MethodContext
from factory.distill.methods.feature_kd import FeatureKD
from factory.distill.methods.margin import MarginBaseline
from factory.distill.stage import open_source
from factory.recipe import RecipeError, TrainConfig, load_recipe
from factory.runtime.contract import ModelContract
from factory.train.loop import fit


@pytest.fixture(scope="module")
def world() -> ProceduralFaceWorld:
    return ProceduralFaceWorld()


class SketchWorld(ProceduralFaceWorld):
    """The real world's latents and groups, with a cheap "render" that still draws from the batch's generator."""

    def synthesis(self, w: torch.Tensor, generator: torch.Generator | None = None, nuisance: float = 1.0) -> Any:
        return torch.randint(0, 256, (len(w), 3, 2, 2), generator=generator, dtype=torch.uint8)


def where(world: ProceduralFaceWorld, batch_size: int = 8, labelled: bool = False, **kw: Any) -> SourceContext:
    return SourceContext(world=world, batch_size=batch_size, seed=0, split="distill", labelled=labelled, **kw)


# ---------------------------------------------------------------------------------------------- margin baseline


def test_margin_recipe_section_loads(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("distill:\n  method:\n    kind: margin\n    head: elastic_arcface\n")
    method = load_recipe(path).distill.method
    assert DISTILL_METHODS.get("margin") is MarginBaseline and method == MarginBaseline(head="elastic_arcface")
    assert method.labelled and method.margin is None and method.identities_per_group == 100
    assert method.describe() == "margin baseline (elastic_arcface, no teacher)"


def test_margin_checks_are_located_like_the_teachers(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("distill:\n  method:\n    kind: margin\n    head: cosface\n    margin: 1.5\n    margin_std: 0.05\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert [str(i) for i in err.value.issues] == [
        f"{path}:5: distill.method.margin: got 1.5 (expected a number in [0, 1) for head 'cosface')",
        f"{path}:6: distill.method.margin_std: got 0.05 for head 'cosface', whose margin is fixed (expected null, "
        "or an elastic head: elastic_arcface, elastic_arcface_plus, elastic_cosface, elastic_cosface_plus)",
    ]
    # The same σ on an elastic head, and ArcFace's margin range, are fine.
    path.write_text("distill:\n  method:\n    kind: margin\n    head: elastic_arcface\n    margin: 1.5\n")
    assert load_recipe(path).distill.method.margin == 1.5


class Replay:
    """Replays the first ``distinct`` batches of a source in turn: a fixed tiny training set, rendered once."""

    def __init__(self, source: Any, distinct: int) -> None:
        self.batches = [source.batch(step) for step in range(distinct)]
        self.source = source

    def batch(self, step: int) -> dict[str, Any]:
        return self.batches[step % len(self.batches)]

    def __getattr__(self, name: str) -> Any:  # feedback and state are the wrapped source's
        return getattr(self.source, name)


def test_margin_baseline_learns_labelled_identities_without_the_teacher(
    world: ProceduralFaceWorld, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    teacher, student = TinyFaceNet(), TinyFaceNet()
    method = MarginBaseline(identities_per_group=2)
    ctx = where(world, labelled=True, identities_per_group=method.identities_per_group)
    source = open_source(method, ProceduralSourceConfig(), ctx)
    assert source.num_classes == 2 * len(world.group_names)
    assert {k.split("/")[0] for k in source.ids.keys} == {"distill"}  # never the teacher's or the benchmark's
    task = method.build(MethodContext(teacher=teacher, student=student, seed=0, num_classes=source.num_classes))
    assert set(task.modules) == {"head"} and task.head.weight.shape == (source.num_classes, 8)
    cfg = TrainConfig(steps=20, batch_size=8, optimizer="adam", lr=0.01, weight_decay=0.0, tensorboard=False)
    result = fit(student, task, Replay(source, 2), cfg, tmp_path, progress=False, log_every=1)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


def test_a_source_without_labels_is_refused_for_the_margin_baseline(world: ProceduralFaceWorld) -> None:
    ctx = where(world, labelled=True)
    mix = MixSourceConfig(sources=[ProceduralSourceConfig()], weights=[1.0])
    with pytest.raises(ValueError, match=r"distill\.method margin trains on identity labels, and distill\.source mix"):
        open_source(MarginBaseline(), mix, ctx)

    class Unlabelled:  # opens fine, but its batches carry no identities
        kind = "custom"

        def open(self, ctx: SourceContext) -> StatelessSource:
            return StatelessSource()

    with pytest.raises(ValueError, match=r"distill\.method margin .* distill\.source custom has none"):
        open_source(MarginBaseline(), Unlabelled(), ctx)
    with pytest.raises(ValueError, match="gave none"):
        MarginBaseline().build(MethodContext(teacher=TinyFaceNet(), student=TinyFaceNet(), seed=0))
    # A label-free method gets the source as it always did: unlabelled, whatever it is.
    assert open_source(FeatureKD(), mix, where(world)).sizes == [8]


# ------------------------------------------------------------------------------------------ adaptive group balance


def test_golden_shares_by_hand() -> None:
    # Strength 1, agreements (.5, .5, .5, .5 − ln 3): exp(1 − a) ∝ (1, 1, 1, 3), a softmax of (1, 1, 1, 3) / 6;
    # half the batch equal (1/8 each) plus half of that: 1/8 + 1/12 = 5/24 and 1/8 + 1/4 = 9/24.
    shares = balance_shares(torch.tensor([0.5, 0.5, 0.5, 0.5 - math.log(3)], dtype=torch.float64), 1.0)
    assert shares.tolist() == pytest.approx([5 / 24, 5 / 24, 5 / 24, 9 / 24], abs=1e-12)
    assert group_counts(shares, 24).tolist() == [5, 5, 5, 9]


@pytest.mark.parametrize("groups", [2, 3, 4, 7])
def test_equal_agreements_give_equal_shares(groups: int) -> None:
    for value, strength in [(0.9, 1.0), (-0.3, 5.0), (0.0, 0.1)]:
        shares = balance_shares(torch.full((groups,), value), strength)
        assert len(set(shares.tolist())) == 1 and shares[0].item() == pytest.approx(1 / groups, abs=1e-12)


def test_no_group_is_starved_and_counts_sum_to_the_batch() -> None:
    extreme = balance_shares(torch.tensor([1.0, 1.0, 1.0, -1.0]), 50.0)
    assert extreme.min().item() >= 1 / 8 - 1e-12 and extreme.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert group_counts(extreme, 16).tolist() == [2, 2, 2, 10]
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        groups = int(torch.randint(2, 8, (1,), generator=gen))
        agreement = torch.rand(groups, generator=gen) * 2 - 1
        shares = balance_shares(agreement, float(torch.rand(1, generator=gen)) * 20 + 0.01)
        assert shares.min().item() >= 1 / (2 * groups) - 1e-12
        total = int(torch.randint(1, 300, (1,), generator=gen))
        counts = group_counts(shares, total, first=int(torch.randint(0, groups, (1,), generator=gen)))
        assert int(counts.sum()) == total
        assert (counts >= math.floor(total / (2 * groups))).all()  # the floor survives the rounding


def test_the_running_agreement_is_an_ema_per_group() -> None:
    balancer = GroupBalancer(3, strength=2.0)
    assert balancer.shares().tolist() == pytest.approx([1 / 3] * 3)  # nothing seen yet: equal
    balancer.feedback({"groups": torch.tensor([0, 0, 1])}, {"agreement": torch.tensor([0.2, 0.4, -0.5])})
    # Group 2 not seen yet counts as the seen groups' mean, (0.3 − 0.5) / 2.
    assert balancer.agreement[:2].tolist() == pytest.approx([0.3, -0.5])
    assert balancer.shares().tolist() == pytest.approx(balance_shares(torch.tensor([0.3, -0.5, -0.1]), 2.0).tolist())
    balancer.feedback({"groups": torch.tensor([0, 2])}, {"agreement": torch.tensor([1.0, 0.7])})
    assert balancer.agreement.tolist() == pytest.approx([0.9 * 0.3 + 0.1 * 1.0, -0.5, 0.7])
    with pytest.raises(ValueError, match="group_balance: equal"):
        balancer.feedback({"groups": torch.tensor([0])}, {})


def old_unlabelled_groups(world: ProceduralFaceWorld, batch_size: int, step: int, seed: int, split: str) -> dict:
    """The round-robin batch as it was before group shares existed (kept here to pin the default draws)."""
    gen = make_generator("unlabelled", seed, split, step)
    groups = len(world.group_names)
    offset = int(torch.randint(0, groups, (1,), generator=gen))
    group = (torch.arange(batch_size) + offset) % groups
    group = group[torch.randperm(batch_size, generator=gen)]
    z = world.sample_z(batch_size, gen)
    w = world.mapping(z, group)
    return {"images": world.synthesis(w, gen), "z": z, "w": w, "group": group}


def test_equal_balance_keeps_the_previous_batches_bit_for_bit(world: ProceduralFaceWorld) -> None:
    sketch = SketchWorld()
    uniform = balance_shares(torch.zeros(len(world.group_names)), 1.0)
    for batch_size in range(1, 11):
        for step in range(4):
            old = old_unlabelled_groups(sketch, batch_size, step, 3, "distill")
            for shares in (None, uniform):  # equal balance, and adaptive before any feedback
                new = unlabelled_batch(sketch, batch_size, step, 3, "distill", shares=shares)
                assert all(torch.equal(old[k], new[k]) for k in old), (batch_size, step)
    # Once with the real renderer, through the source as a recipe opens it.
    source = ProceduralSourceConfig().open(where(world, batch_size=5))
    batch, old = source.batch(7), old_unlabelled_groups(world, 5, 7, 0, "distill")
    assert torch.equal(batch["pixels"], old["images"]) and torch.equal(batch["groups"], old["group"])
    assert source.state_dict() == {}


def test_adaptive_state_round_trip_gives_the_same_next_batch(world: ProceduralFaceWorld) -> None:
    cfg = ProceduralSourceConfig(group_balance="adaptive", adaptive_strength=50.0)
    ctx = where(world)
    assert cfg.describe(ctx) == "procedural:distill (adaptive group balance, strength 50)"
    source = cfg.open(ctx)
    assert set(source.state_dict()) == {"balance"}
    groups = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    source.feedback(0, {"groups": groups}, {"agreement": torch.where(groups == 2, -1.0, 1.0)})
    restored = cfg.open(ctx)
    restored.load_state_dict(source.state_dict())
    batch = source.batch(1)
    assert torch.bincount(batch["groups"], minlength=4).tolist() == [1, 1, 5, 1]  # shares ≈ (1, 1, 5, 1) / 8
    again = restored.batch(1)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    with pytest.raises(ValueError, match="stateless source got resume state"):
        ProceduralSourceConfig().open(ctx).load_state_dict(source.state_dict())


def test_adaptive_balance_composes_with_dynamic_resampling(world: ProceduralFaceWorld) -> None:
    cfg = ProceduralSourceConfig(sampling="dynamic", group_balance="adaptive", adaptive_strength=50.0)
    source = cfg.open(where(world))
    fresh = source.batch(0)
    assert torch.bincount(fresh["groups"], minlength=4).tolist() == [2, 2, 2, 2]  # nothing fed back yet
    source.feedback(0, fresh, {"agreement": torch.where(fresh["groups"] == 0, -1.0, 1.0)})
    state = source.state_dict()
    assert set(state) == {"pending", "balance"}
    moved = source.batch(1)
    assert torch.equal(moved["groups"], fresh["groups"])  # the re-sampled step keeps its pair's groups
    source.feedback(1, moved, {"agreement": torch.where(moved["groups"] == 0, -1.0, 1.0)})
    assert torch.bincount(source.batch(2)["groups"], minlength=4).tolist() == [5, 1, 1, 1]
    resumed = cfg.open(where(world))
    resumed.load_state_dict(state)
    assert torch.equal(resumed.batch(1)["pixels"], moved["pixels"])


def test_adaptive_balance_is_refused_where_it_cannot_work(world: ProceduralFaceWorld, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labelled source"):
        ProceduralSourceConfig(group_balance="adaptive").open(where(world, labelled=True))
    path = tmp_path / "r.yaml"
    path.write_text(
        "distill:\n  source:\n    kind: procedural\n    group_balance: adaptive\n    adaptive_strength: 0\n"
    )
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert [str(i) for i in err.value.issues] == [
        f"{path}:5: distill.source.adaptive_strength: got 0.0 (expected a number > 0)"
    ]


def test_check_refuses_embeddings_a_method_cannot_compare(tmp_path: Path) -> None:
    from factory.models.catalog import register_model
    from factory.models.zoo import MODELS

    if "toy_embed128" not in MODELS.names():
        register_model("toy_embed128", ModelContract(embedding_dim=128))(lambda **kw: TinyFaceNet())
    recipe = tmp_path / "r.yaml"
    recipe.write_text("distill:\n  student: toy_embed128\n  method: {kind: qud}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    assert [str(i) for i in err.value.issues] == [
        f"{recipe}:2: distill.student: 'toy_embed128' embeds in 128 dimensions, the teacher 'iresnet_nano' in 512 "
        "(expected equal sizes for distill.method qud, or a method with an adaptor)"
    ]
    recipe.write_text("distill:\n  student: toy_embed128\n  method: {kind: margin}\n  source: {kind: procedural}\n")
    assert load_recipe(recipe).distill.student == "toy_embed128"  # a margin baseline has no teacher to match
