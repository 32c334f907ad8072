"""Margin heads (REFERENCE.md §4): golden target logits, ElasticFace's per-sample margins and the "+" rank
assignment, and the recipe's ``teacher.margin_std``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from factory.models.heads import (
    HEADS,
    ArcFace,
    CosFace,
    ElasticArcFace,
    ElasticCosFace,
    ElasticMarginHead,
    create_head,
)
from factory.recipe import RecipeError, load_recipe

ELASTIC = ["elastic_cosface", "elastic_arcface", "elastic_cosface_plus", "elastic_arcface_plus"]
PLAIN_OF = {
    "elastic_cosface": "cosface",
    "elastic_arcface": "arcface",
    "elastic_cosface_plus": "cosface",
    "elastic_arcface_plus": "arcface",
}


def batch(n: int = 64, dim: int = 16, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and labels; the head's own weights come from the global seed set here."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


def target_cosines(head: torch.nn.Module, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The target cosines the head sees, computed independently of it."""
    cos = F.linear(F.normalize(emb), F.normalize(head.weight)).clamp(-1.0, 1.0)
    return cos.gather(1, labels[:, None]).flatten().detach()


def drawn(n: int, seed: int, margin: float, std: float) -> torch.Tensor:
    """The margins a head with ``torch.Generator().manual_seed(seed)`` draws for a batch of ``n``."""
    return (torch.randn(n, 1, generator=torch.Generator().manual_seed(seed)) * std + margin).flatten()


# Golden values -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "margin", "cos", "expected"),
    [
        # s·(cos θ − m) with s = 64, m = 0.35: 64·0.45, 64·(−0.35), 64·0.65, 64·(−1.35)
        ("cosface", 0.35, [0.8, 0.0, 1.0, -1.0], [28.8, -22.4, 41.6, -86.4]),
        # s·cos(θ + 0.5) = s·(c·cos 0.5 − sin θ·sin 0.5) by hand for c = 0.8 (sin θ = 0.6), 0 (1) and 0.6 (0.8);
        # for c = −0.95 (θ past π − 0.5) the continuation s·(c − 0.5·sin 0.5). Not at c = 1: there the safe
        # formulation's sin θ >= √1e-9 moves the logit by about 1e-3.
        ("arcface", 0.5, [0.8, 0.0, 0.6, -0.95], [26.522286, -30.683234, 9.152583, -76.141617]),
    ],
)
def test_plain_target_logits_by_hand(head: str, margin: float, cos: list[float], expected: list[float]) -> None:
    layer = create_head(head, 2, 2, margin=margin)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    c = torch.tensor(cos, dtype=torch.float64)
    emb = torch.stack([c, torch.sqrt(1 - c * c)], 1).float()  # cosine c to class 0
    logits = layer(emb, torch.zeros(len(cos), dtype=torch.long))
    assert torch.allclose(logits[:, 0], torch.tensor(expected), atol=2e-4), logits[:, 0]
    # The formula the numbers came from, so a wrong literal cannot pass silently.
    if head == "arcface":
        formula = [
            64 * (math.cos(math.acos(x) + margin) if x > -math.cos(margin) else x - margin * math.sin(margin))
            for x in cos
        ]
    else:
        formula = [64 * (x - margin) for x in cos]
    assert expected == pytest.approx(formula, abs=1e-5)


@pytest.mark.parametrize("name", ELASTIC)
@pytest.mark.parametrize("training", [True, False])
def test_elastic_with_zero_std_is_its_plain_head_exactly(name: str, training: bool) -> None:
    emb, labels = batch()
    torch.manual_seed(1)
    plain = create_head(PLAIN_OF[name], 16, 10, scale=30.0, margin=0.45)
    torch.manual_seed(1)
    elastic = create_head(name, 16, 10, scale=30.0, margin=0.45, margin_std=0.0)
    elastic.train(training)
    assert torch.equal(plain.weight, elastic.weight)
    assert torch.equal(elastic(emb, labels), plain(emb, labels))


def test_defaults_are_the_papers() -> None:
    for name, cls, m in [("elastic_arcface", ElasticArcFace, 0.5), ("elastic_cosface", ElasticCosFace, 0.35)]:
        for variant in (name, f"{name}_plus"):
            head = create_head(variant, 8, 3)
            assert isinstance(head, cls) and head.elastic
            # σ = 0.05 as ElasticFace's configs, not its constructor's 0.0125
            assert (head.scale, head.margin, head.margin_std) == (64.0, m, 0.05)
            assert head.plus == variant.endswith("_plus")
    assert ElasticArcFace.margin_range == ArcFace.margin_range and ElasticCosFace.margin_range == CosFace.margin_range
    assert {n for n in HEADS.names() if getattr(HEADS.get(n), "elastic", False)} == set(ELASTIC)


# Per-sample, per-forward margins -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ELASTIC)
def test_margins_are_drawn_per_sample_and_per_forward(name: str) -> None:
    emb, labels = batch()
    head = create_head(name, 16, 10, generator=torch.Generator().manual_seed(3))
    first = head(emb, labels)
    m1 = head.last_margins.clone()
    second = head(emb, labels)
    m2 = head.last_margins.clone()
    assert m1.shape == (64, 1)
    assert len(torch.unique(m1)) == 64  # one margin per sample
    assert not torch.equal(m1, m2) and not torch.equal(first, second)  # fresh at every forward
    # Only the target logits move with the margins.
    others = torch.ones_like(first, dtype=torch.bool)
    others[torch.arange(64), labels] = False
    assert torch.equal(first[others], second[others])

    head.eval()
    a, b = head(emb, labels), head(emb, labels)
    assert torch.equal(a, b)
    assert torch.equal(head.last_margins, torch.full((64, 1), head.margin))
    plain = create_head(PLAIN_OF[name], 16, 10)
    with torch.no_grad():
        plain.weight.copy_(head.weight)
    assert torch.equal(a, plain(emb, labels))  # eval: the mean margin, no sampling


@pytest.mark.parametrize("name", ["elastic_arcface", "elastic_cosface"])
def test_draws_follow_normal_m_sigma(name: str) -> None:
    emb, labels = batch(n=4000, dim=4, classes=3)
    head = create_head(name, 4, 3, generator=torch.Generator().manual_seed(7))
    draws = []
    for _ in range(5):
        head(emb, labels)
        draws.append(head.last_margins.flatten())
    m = torch.cat(draws).double()
    # 20,000 draws: standard errors about 0.00035 (mean) and 0.00025 (std)
    assert abs(m.mean().item() - head.margin) < 0.002
    assert abs(m.std().item() - 0.05) < 0.002


def test_generator_makes_draws_reproducible_and_global_rng_is_the_default() -> None:
    emb, labels = batch()
    head = create_head("elastic_arcface", 16, 10, generator=torch.Generator().manual_seed(5))
    head(emb, labels)
    assert torch.equal(head.last_margins.flatten(), drawn(64, 5, 0.5, 0.05))

    head.generator = None
    torch.manual_seed(11)
    head(emb, labels)
    once = head.last_margins.clone()
    torch.manual_seed(11)
    head(emb, labels)
    assert torch.equal(head.last_margins, once)
    torch.manual_seed(11)
    assert torch.equal(once.flatten(), (torch.randn(64, 1) * 0.05 + 0.5).flatten())


# The "+" rank assignment ---------------------------------------------------------------------------------------


def rank_ordered(cos: torch.Tensor, margins: torch.Tensor) -> bool:
    """Whether, with samples sorted by target cosine descending (ties in batch order), margins are ascending."""
    order = cos.sort(descending=True, stable=True).indices
    return bool((margins[order].diff() >= 0).all())


@pytest.mark.parametrize("name", ["elastic_arcface_plus", "elastic_cosface_plus"])
@pytest.mark.parametrize("seed", range(5))
def test_plus_gives_the_smallest_margins_to_the_closest_samples(name: str, seed: int) -> None:
    emb, labels = batch(seed=seed)
    head = create_head(name, 16, 10, generator=torch.Generator().manual_seed(seed))
    head(emb, labels)
    cos, margins = target_cosines(head, emb, labels), head.last_margins.flatten()
    assert rank_ordered(cos, margins)
    # Exactly the sorted draw, laid out by rank; so a permutation of what was drawn.
    order = cos.sort(descending=True, stable=True).indices
    assert torch.equal(margins[order], drawn(64, seed, head.margin, 0.05).sort().values)


def test_plus_breaks_ties_by_batch_order() -> None:
    head = create_head("elastic_arcface_plus", 2, 1, generator=torch.Generator().manual_seed(0))
    emb = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 1.0]]))
    head(emb, torch.zeros(5, dtype=torch.long))
    ascending = drawn(5, 0, 0.5, 0.05).sort().values
    # Samples 0, 2, 3 tie at cos 1 and take the three smallest in batch order; 1 and 4 tie at cos 1/√2.
    assert torch.equal(head.last_margins.flatten(), ascending[[0, 3, 1, 2, 4]])


def test_argsort_gather_would_not_be_rank_ordered() -> None:
    """The public ElasticFace+ code indexes the sorted margins by the cosines' argsort; that is not a rank
    assignment, and this input tells the two apart."""
    cos = torch.tensor([0.1, 0.9, 0.5, 0.3])
    emb = torch.stack([cos, torch.sqrt(1 - cos * cos)], 1)
    head = create_head("elastic_cosface_plus", 2, 1, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0]]))
    head(emb, torch.zeros(4, dtype=torch.long))
    seen = target_cosines(head, emb, torch.zeros(4, dtype=torch.long))
    ascending = drawn(4, 2, 0.35, 0.05).sort().values
    gathered = ascending[seen.argsort(descending=True)]  # sample i gets the margin of rank order[i]
    assert rank_ordered(seen, head.last_margins.flatten())
    assert not rank_ordered(seen, gathered)
    assert torch.equal(gathered.sort().values, ascending)  # same margins, only the assignment differs


# Gradients and the ends of the cosine range ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cosface", "arcface", *ELASTIC])
def test_gradients_flow_and_logits_are_finite_at_cos_plus_minus_one(name: str) -> None:
    torch.manual_seed(0)
    head = create_head(name, 8, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        centres = F.normalize(head.weight)
        # cos = +1 and −1 exactly on the target, then generic samples
        emb = torch.cat([centres[[0, 1]] * 3.0, -centres[[2, 3]], torch.randn(2, 8)])
    emb.requires_grad_(True)
    logits = head(emb, labels)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, labels).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()
    assert emb.grad.abs().sum() > 0 and head.weight.grad.abs().sum() > 0


# Construction and recipes --------------------------------------------------------------------------------------


def test_margin_std_is_only_for_elastic_heads() -> None:
    head = create_head("elastic_cosface", 8, 3, margin_std=0.1)
    assert isinstance(head, ElasticMarginHead) and head.margin_std == 0.1
    assert create_head("elastic_cosface", 8, 3, margin_std=None).margin_std == 0.05  # None: the default
    assert isinstance(create_head("cosface", 8, 3, margin_std=None), CosFace)
    with pytest.raises(ValueError, match=r"head 'cosface' has a fixed margin: margin_std is for the elastic heads"):
        create_head("cosface", 8, 3, margin_std=0.05)
    for bad in (-0.01, math.inf, math.nan):
        with pytest.raises(ValueError, match="margin_std must be a finite number >= 0"):
            create_head("elastic_arcface", 8, 3, margin_std=bad)


def test_recipe_with_an_elastic_head_loads(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("teacher:\n  head: elastic_arcface\n  margin: 0.5\n  margin_std: 0.05\n  scale: 64\n")
    teacher = load_recipe(path).teacher
    assert (teacher.head, teacher.margin, teacher.margin_std) == ("elastic_arcface", 0.5, 0.05)
    path.write_text("teacher:\n  head: elastic_cosface_plus\n")
    assert load_recipe(path).teacher.margin_std is None


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        (
            "teacher:\n  head: cosface\n  margin_std: 0.05\n",
            None,
            ":3: teacher.margin_std: got 0.05 for head 'cosface', whose margin is fixed (expected null, or an elastic "
            "head: elastic_arcface, elastic_arcface_plus, elastic_cosface, elastic_cosface_plus)",
        ),
        ("teacher:\n  head: arcface\n", ["teacher.margin_std=0.1"], "teacher.margin_std: got 0.1 for head 'arcface'"),
        (
            "teacher:\n  head: elastic_arcface\n  margin: 0.5\n  margin_std: -0.05\n",
            None,
            ":4: teacher.margin_std: got -0.05 (expected a number >= 0)",
        ),
    ],
)
def test_recipe_refuses_a_bad_margin_std(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, overrides)
    issues = [str(i) for i in err.value.issues]
    assert len(issues) == 1 and expected in issues[0], issues
