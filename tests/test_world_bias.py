"""A world with known bias: per-group difficulty as taxonomy data, recipe changes on top, and what they do."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from helpers import DEMO_RECIPE

from factory.data.world.renderer import ProceduralFaceWorld, make_world
from factory.data.world.seeding import make_generator
from factory.data.world.splits import identity_set, unlabelled_batch
from factory.data.world.taxonomy import (
    DEFAULT_TAXONOMY,
    DIFFICULTY_KNOBS,
    TaxonomyError,
    apply_difficulty,
    load_taxonomy,
)
from factory.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]
KNOWN_BIAS = ROOT / "recipes" / "known_bias.yaml"
HARD = "gamma"  # the group known_bias.yaml makes harder


def change(nuisance: float = 1.0, identity_spread: float = 1.0, within_identity: float = 0.0) -> SimpleNamespace:
    """A difficulty change, as the recipe's ``data.world.difficulty.<group>`` section carries it."""
    return SimpleNamespace(nuisance=nuisance, identity_spread=identity_spread, within_identity=within_identity)


def digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


# -- the taxonomy: difficulty as data ------------------------------------------------------------------------------


def test_the_built_in_world_declares_no_within_identity_variability() -> None:
    """The built-in world keeps its measured, milder knobs: beta narrowest, nobody jittered between photos."""
    groups = {g.name: g for g in load_taxonomy()}
    assert min(groups, key=lambda name: groups[name].identity_spread) == "beta"
    assert all(group.within_identity == 0 for group in groups.values())
    assert all(knob in groups["beta"].to_dict() for knob in DIFFICULTY_KNOBS)


def test_within_identity_loads_from_defaults_and_groups(tmp_path: Path) -> None:
    path = tmp_path / "world.yaml"
    colours = "".join(
        f"    {c}: {{mean_rgb: [100, 100, 100], lightness_std: 5, warmth_std: 5, tint_std: 5}}\n"
        for c in ("skin", "hair", "iris")
    )
    path.write_text(
        f"defaults:\n  within_identity: 0.2\n  colours:\n{colours}"
        "groups:\n  - name: steady\n  - name: shifting\n    within_identity: 0.5\n"
    )
    steady, shifting = load_taxonomy(path)
    assert (steady.within_identity, shifting.within_identity) == (0.2, 0.5)


@pytest.mark.parametrize(
    ("block", "where", "problem"),
    [
        ("groups:\n  - name: a\n    within_identity: -0.1\n", r"groups\[0\]\.within_identity", "must be >= 0"),
        ("groups:\n  - name: a\n    within_identity: .nan\n", r"groups\[0\]\.within_identity", "expected a finite"),
        ("defaults:\n  within_identity: lots\ngroups:\n  - name: a\n", "defaults.within_identity", "expected a number"),
        ("groups:\n  - name: a\n    within_identty: 0.1\n", r"groups\[0\]\.within_identty", "unknown key"),
    ],
)
def test_bad_within_identity_names_file_and_key(tmp_path: Path, block: str, where: str, problem: str) -> None:
    path = tmp_path / "world.yaml"
    path.write_text(block)
    with pytest.raises(TaxonomyError, match=rf"world\.yaml: {where}: {problem}"):
        load_taxonomy(path)


# -- a recipe's changes --------------------------------------------------------------------------------------------


def test_apply_difficulty_multiplies_and_adds_jitter_in_variance() -> None:
    base = {g.name: g for g in load_taxonomy()}
    changed = {g.name: g for g in apply_difficulty(list(base.values()), {HARD: change(1.5, 0.7, 0.3)})}
    hard, was = changed[HARD], base[HARD]
    assert hard.nuisance == {k: v * 1.5 for k, v in was.nuisance.items()}
    assert hard.identity_spread == pytest.approx(was.identity_spread * 0.7)
    assert hard.within_identity == pytest.approx(np.hypot(was.within_identity, 0.3))
    assert hard.features == was.features and hard.colours == was.colours  # the look is the taxonomy's
    assert all(changed[name] is base[name] for name in base if name != HARD)
    with pytest.raises(ValueError, match="no group 'omega' in the taxonomy .groups: alpha, beta, gamma, delta"):
        apply_difficulty(list(base.values()), {"omega": change()})
    with pytest.raises(ValueError, match="expected >= 0, > 0, >= 0"):
        apply_difficulty(list(base.values()), {HARD: change(identity_spread=0.0)})


def test_known_bias_recipe_builds_a_world_with_one_harder_group() -> None:
    recipe = load_recipe(KNOWN_BIAS)
    assert list(recipe.data.world.difficulty) == [HARD]
    world = make_world(recipe.data.world)
    default = {g.name: g for g in make_world(load_recipe(DEMO_RECIPE).data.world).groups}
    for spec in world.groups:
        if spec.name == HARD:
            assert spec.identity_spread < default[HARD].identity_spread
            assert spec.within_identity > default[HARD].within_identity
            assert all(spec.nuisance[k] > default[HARD].nuisance[k] for k in spec.nuisance)
        else:
            assert spec.to_dict() == default[spec.name].to_dict()


def test_recipe_difficulty_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        f"extends: {KNOWN_BIAS}\n"
        "data:\n"
        "  world:\n"
        "    difficulty:\n"
        "      gama: {nuisance: 1.5}\n"
        "      delta: {identity_spread: 0, within_identity: -1, nuisnce: 2}\n"
    )
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["data.world.difficulty.beta.nuisance=9"])
    lines = str(err.value).splitlines()
    expected = [
        "r.yaml:5: data.world.difficulty.gama: unknown group (did you mean 'gamma'? the taxonomy has: alpha, beta,",
        "r.yaml:6: data.world.difficulty.delta.identity_spread: got 0.0 (expected a number in (0, 4])",
        "r.yaml:6: data.world.difficulty.delta.within_identity: got -1.0 (expected a number in [0, 4]",
        "r.yaml:6: data.world.difficulty.delta.nuisnce: unknown key (did you mean 'nuisance'?",
        "data.world.difficulty.beta.nuisance: got 9.0 (expected a number in [0, 4]",
    ]
    for text in expected:
        assert any(text in line for line in lines), (text, lines)


# -- the renderer: what a change does to the images ----------------------------------------------------------------


def test_zero_within_identity_renders_bit_identical_images() -> None:
    """The knob at 0 changes no pixel: the built-in world renders the batch pinned before the knob existed."""
    batch = unlabelled_batch(ProceduralFaceWorld(seed=0), 4, step=0, seed=0)
    # The golden batch that tests/test_data.py pins for the built-in world.
    assert digest(batch["images"]) == "2baf46bda1216ffa14cb5247b343f7c54c2cf82de6e567b768b235d3fa4e28f0"


def test_jitter_changes_only_its_group_and_survives_a_clean_capture() -> None:
    """Jitter moves the hard group's faces and no other group's; nuisance 0 (a clean camera) does not remove it."""
    base = ProceduralFaceWorld(seed=0)
    jittery = ProceduralFaceWorld(apply_difficulty(load_taxonomy(), {HARD: change(within_identity=0.5)}), seed=0)
    ids = identity_set(base, "bias", per_group=6, seed=0)
    hard = ids.group == base.group_names.index(HARD)
    before = base.synthesis(base.mapping(ids.z, ids.group), make_generator("bias", 0))
    after = jittery.synthesis(jittery.mapping(ids.z, ids.group), make_generator("bias", 0))
    assert torch.equal(before[~hard], after[~hard])
    assert (before[hard].float() - after[hard].float()).abs().mean() > 1.0
    w = jittery.mapping(ids.z, ids.group)
    clean_a = jittery.synthesis(w, make_generator("a", 0), nuisance=0.0)[hard].float()
    clean_b = jittery.synthesis(w, make_generator("b", 0), nuisance=0.0)[hard].float()
    assert (clean_a - clean_b).abs().mean() > 1.0  # the person changed between the photos, not the camera


def pair_distances(world: ProceduralFaceWorld, nuisance: float, per_group: int = 48) -> dict[str, tuple[float, float]]:
    """Per group: mean pixel distance of genuine pairs (two captures of one person) and of impostor pairs.

    Measured on the face region (rows 24..100, columns 20..92 of the aligned crop), where identity lives.
    """
    ids = identity_set(world, "bias-pairs", per_group=per_group, seed=0)
    w = world.mapping(ids.z, ids.group)
    first = world.synthesis(w, make_generator("bias-first", 0), nuisance)[:, :, 24:100, 20:92].float()
    second = world.synthesis(w, make_generator("bias-second", 0), nuisance)[:, :, 24:100, 20:92].float()
    out = {}
    for g, name in enumerate(world.group_names):
        a, b = first[ids.group == g].flatten(1), second[ids.group == g].flatten(1)
        genuine = (a - b).abs().mean(1).mean()
        impostor = (a - b.roll(1, dims=0)).abs().mean(1).mean()
        out[name] = (float(genuine), float(impostor))
    return out


def harder(knob: SimpleNamespace) -> ProceduralFaceWorld:
    return ProceduralFaceWorld(apply_difficulty(load_taxonomy(), {HARD: knob}), seed=0)


def test_each_knob_makes_its_group_harder_in_pixels() -> None:
    """Each knob alone moves its group's pairs the way that makes verification harder, and no other group's.

    The identity knobs are measured on clean captures: under full nuisances a pixel distance is mostly pose,
    lighting and background, which hides the identity. The nuisance knob is measured with the nuisances it scales.
    """
    clean, captured = pair_distances(ProceduralFaceWorld(seed=0), 0.0), pair_distances(ProceduralFaceWorld(seed=0), 1.0)

    stronger = pair_distances(harder(change(nuisance=1.5)), 1.0)
    genuine, impostor = stronger[HARD]
    assert genuine / impostor > captured[HARD][0] / captured[HARD][1] + 0.03  # a person's photos drift apart

    alike = pair_distances(harder(change(identity_spread=0.7)), 0.0)
    assert alike[HARD][1] < 0.85 * clean[HARD][1]  # two people look more alike

    jittered = pair_distances(harder(change(within_identity=0.3)), 0.0)
    genuine, impostor = jittered[HARD]
    assert clean[HARD][0] < 0.01 * clean[HARD][1] and genuine > 0.1 * impostor  # one person varies between photos

    for changed, reference in ((stronger, captured), (alike, clean), (jittered, clean)):
        assert all(changed[g] == reference[g] for g in reference if g != HARD)  # the other groups render identically


# -- ground truth for the fairness machinery ----------------------------------------------------------------------

# A teacher trained for seconds (Adam, a plain normalised softmax, few identities: what learns fastest here) on a
# world whose groups differ only in looks and are photographed gently, except gamma, declared much harder. Enough
# to rank the groups and separate gamma's interval; about 50 s on 2 idle cores, several minutes on busy ones.
TINY_TEACHER = [
    "data.benchmark_pairs_per_group=300",
    "data.calibration.images=8",
    "data.preview_identities=1",
    "data.preview_samples=1",
    "teacher.model=tinyfar_c",
    "teacher.identities_per_group=10",
    "teacher.train.steps=120",
    "teacher.train.batch_size=32",
    "teacher.train.warmup_steps=10",
    "teacher.train.optimizer=adam",
    "teacher.train.lr=0.002",
    "teacher.train.weight_decay=0",
    "teacher.train.checkpoint_every=1000",
    "teacher.margin=0",
]
VERY_HARD = [
    f"data.world.difficulty.{HARD}.nuisance=2.0",
    f"data.world.difficulty.{HARD}.identity_spread=0.5",
    f"data.world.difficulty.{HARD}.within_identity=1.0",
]


def even_gentle_taxonomy(path: Path, nuisance: float = 0.3) -> Path:
    """The built-in taxonomy with every group's difficulty knobs removed and gentle capture conditions for all."""
    doc = yaml.safe_load(DEFAULT_TAXONOMY.read_text())
    for group in doc["groups"]:
        for knob in DIFFICULTY_KNOBS:
            group.pop(knob, None)
    doc["defaults"]["nuisance"] = dict.fromkeys(doc["defaults"]["nuisance"], nuisance)
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow  # trains a teacher: minutes on 2 shared cores; benchmarks/known_bias.py is the full-size study
def test_a_declared_hard_group_is_the_lowest_with_a_separating_interval(tmp_path: Path) -> None:
    from factory.data.benchmark import PairBenchmark
    from factory.data.stage import BENCHMARK_FILE
    from factory.evaluate.benchmark_eval import embed_images, evaluate_embeddings
    from factory.models.external import model_runner
    from factory.pipeline.build import build as run_build
    from factory.runtime.runners import embed_uint8
    from factory.train.stage import TEACHER_FILE

    taxonomy = even_gentle_taxonomy(tmp_path / "even.yaml")
    overrides = [f"run_dir={tmp_path / 'run'}", f"data.world.taxonomy={taxonomy}", *TINY_TEACHER, *VERY_HARD]
    recipe = load_recipe(KNOWN_BIAS, overrides)
    result = run_build(recipe, until="teacher", echo=lambda line: None, progress=False)
    bench = PairBenchmark.load(result.stages["data"].path(BENCHMARK_FILE))
    runner = model_runner(recipe.teacher.model, result.stages["teacher"].path(TEACHER_FILE), threads=recipe.threads)
    embeddings = embed_images(embed_uint8(runner), bench.images, batch_size=100, flip=False)
    groups = evaluate_embeddings(embeddings, bench, replicates=300).to_dict()["groups"]
    accuracy = {name: g["accuracy_mean"] for name, g in groups.items()}
    assert min(accuracy, key=accuracy.get) == HARD, accuracy
    others_lowest = min(groups[name]["ci"][0] for name in groups if name != HARD)
    assert groups[HARD]["ci"][1] < others_lowest, groups  # the 95 % intervals do not overlap
