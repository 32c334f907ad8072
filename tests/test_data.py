"""The procedural face world, its batches and the RFW-like benchmark builder."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from factory.data.benchmark import (
    BenchmarkFormatError,
    CrossGroupImpostors,
    build_benchmark,
    draw_cross_impostors,
    pair_layout,
)
from factory.data.preview import write_previews
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.seeding import make_generator
from factory.data.world.splits import identity_set, labelled_batch, unlabelled_batch
from factory.data.world.taxonomy import TaxonomyError, load_taxonomy


@pytest.fixture(scope="module")
def world() -> ProceduralFaceWorld:
    return ProceduralFaceWorld(seed=0)


def test_world_has_at_least_four_groups_from_the_taxonomy_file(world: ProceduralFaceWorld) -> None:
    assert len(world.group_names) >= 4
    assert world.group_names == [g.name for g in load_taxonomy()]


def test_stylegan_interface_shapes(world: ProceduralFaceWorld) -> None:
    z = world.sample_z(6, make_generator("t", 0))
    w = world.mapping(z, torch.arange(6) % len(world.group_names))
    assert z.shape == (6, world.z_dim) and w.shape == (6, world.w_dim)
    images = world.synthesis(w, make_generator("n", 0))
    assert images.shape == (6, 3, 112, 112) and images.dtype == torch.uint8
    # Truncation pulls identities towards their group mean.
    groups = torch.zeros(6, dtype=torch.long)
    near = world.mapping(z, groups, truncation_psi=0.5)
    far = world.mapping(z, groups)
    centre = world.mapping(torch.zeros(1, world.z_dim), groups[:1])
    assert (near - centre).norm(dim=1).mean() < (far - centre).norm(dim=1).mean()
    with pytest.raises(ValueError, match="z must be"):
        world.mapping(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


def test_batches_are_pure_functions_of_seed_and_step(world: ProceduralFaceWorld) -> None:
    a = unlabelled_batch(world, 8, step=3, seed=1)
    b = unlabelled_batch(world, 8, step=3, seed=1)
    c = unlabelled_batch(world, 8, step=4, seed=1)
    assert torch.equal(a["images"], b["images"]) and not torch.equal(a["images"], c["images"])
    assert set(a) == {"images", "z", "w", "group"}
    assert torch.bincount(a["group"], minlength=4).tolist() == [2, 2, 2, 2]  # balanced over groups
    ids = identity_set(world, "teacher", per_group=3, seed=0)
    x1, y1, g1 = labelled_batch(world, ids, 5, step=0, seed=0)
    x2, y2, _ = labelled_batch(world, ids, 5, step=0, seed=0)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(g1, ids.group[y1])


def test_rendering_matches_the_golden_batch() -> None:
    # Golden value computed with the pre-split factory/data/procedural.py: it guards the split into
    # factory.data.world (and any later refactor) against a rendering change of even one pixel. Only a deliberate
    # change to the renderer, the built-in taxonomy or the seeding should ever update it.
    batch = unlabelled_batch(ProceduralFaceWorld(seed=0), 4, step=0, seed=0)
    digest = hashlib.sha256(batch["images"].contiguous().numpy().tobytes()).hexdigest()
    assert digest == "2baf46bda1216ffa14cb5247b343f7c54c2cf82de6e567b768b235d3fa4e28f0"


def test_splits_never_share_identities(world: ProceduralFaceWorld) -> None:
    teacher = identity_set(world, "teacher", per_group=50, seed=0)
    bench = identity_set(world, "benchmark", per_group=50, seed=0)
    assert not set(teacher.keys) & set(bench.keys)
    # Different latents, not just different names: no benchmark z is within reach of a teacher z.
    assert torch.cdist(teacher.z, bench.z).min() > 1.0


def test_identity_is_fixed_and_nuisance_varies(world: ProceduralFaceWorld) -> None:
    """Without nuisance a face is its identity alone; with it, two captures of one identity differ.

    Groups that declare within-identity variability are left out: their people change between photos by design.
    """
    ids = identity_set(world, "check", per_group=4, seed=0)
    steady = torch.tensor([world.groups[g].within_identity == 0 for g in ids.group.tolist()])
    assert steady.any()
    w = world.mapping(ids.z, ids.group)[steady]
    clean_a = world.synthesis(w, make_generator("a", 0), nuisance=0.0).float()
    clean_b = world.synthesis(w, make_generator("b", 0), nuisance=0.0).float()
    noisy_a = world.synthesis(w, make_generator("a", 0)).float()
    noisy_b = world.synthesis(w, make_generator("b", 0)).float()
    identity_gap = (clean_a - clean_a.roll(1, dims=0)).abs().mean()
    assert (clean_a - clean_b).abs().mean() < 0.05 * identity_gap
    assert (noisy_a - noisy_b).abs().mean() > 0.2 * identity_gap


def test_groups_look_different(world: ProceduralFaceWorld) -> None:
    batch = unlabelled_batch(world, 256, step=0, seed=0)
    centre = batch["images"][:, :, 50:70, 40:72].float().mean(dim=(2, 3))  # cheeks and nose: mostly skin
    means = torch.stack([centre[batch["group"] == g].mean(0) for g in range(len(world.group_names))])
    gaps = torch.cdist(means, means) + torch.eye(len(means)) * 1e9
    assert gaps.min() > 5.0  # every pair of groups differs in mean skin colour by more than 5 grey levels


def test_taxonomy_errors_name_file_and_key(tmp_path) -> None:
    bad = tmp_path / "world.yaml"
    bad.write_text("groups:\n  - name: a\n    features:\n      nose_lenght: [1.0, 0.1]\n")
    with pytest.raises(TaxonomyError, match=r"world\.yaml: groups\[0\]\.features\.nose_lenght: unknown key"):
        load_taxonomy(bad)
    bad.write_text("groups:\n  - name: a\n    identity_spread: wide\n")
    with pytest.raises(TaxonomyError, match="identity_spread: expected a number"):
        load_taxonomy(bad)
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_taxonomy(tmp_path / "nowhere.yaml")


def test_pair_layout_folds_are_balanced_and_subject_disjoint() -> None:
    layout, same = pair_layout(80, np.random.default_rng(0))
    assert layout.shape == (80, 2) and same.shape == (80,)
    folds = np.split(np.arange(80), 10)
    seen: set[int] = set()
    for fold in folds:
        assert same[fold].tolist() == [True] * 4 + [False] * 4
        genuine, impostor = layout[fold][same[fold]], layout[fold][~same[fold]]
        assert (genuine[:, 0] == genuine[:, 1]).all() and (impostor[:, 0] != impostor[:, 1]).all()
        ids = set(layout[fold].ravel().tolist())
        assert not ids & seen
        seen |= ids
    with pytest.raises(ValueError, match="multiple of 20"):
        pair_layout(70, np.random.default_rng(0))


def test_build_benchmark_is_deterministic_and_grouped(world: ProceduralFaceWorld) -> None:
    bench = build_benchmark(world, pairs_per_group=40, seed=0)
    again = build_benchmark(world, pairs_per_group=40, seed=0)
    groups = len(world.group_names)
    assert bench.images.shape == (2 * 40 * groups, 3, 112, 112)
    assert np.array_equal(bench.images, again.images)
    assert bench.issame.sum() == 20 * groups
    subjects = bench.subjects.reshape(-1, 2)
    assert (subjects[bench.issame, 0] == subjects[bench.issame, 1]).all()
    assert (subjects[~bench.issame, 0] != subjects[~bench.issame, 1]).all()
    for g, name in enumerate(bench.group_names):
        assert (bench.groups[bench.group_indices(name)] == g).all()
        assert len(bench.group_indices(name)) == 40


def test_cross_group_impostors_are_drawn_among_the_benchmarks_images(world: ProceduralFaceWorld, tmp_path) -> None:
    bench = build_benchmark(world, pairs_per_group=40, seed=0)
    cross = draw_cross_impostors(bench, pairs_per_cell=7, seed=3)
    n = len(bench.group_names)
    assert cross.pairs.shape == cross.cells.shape == (7 * n * (n - 1) // 2, 2)
    image_groups = np.repeat(bench.groups, 2)
    assert np.array_equal(image_groups[cross.pairs], cross.cells)  # each image is of its cell's group
    assert (cross.cells[:, 0] < cross.cells[:, 1]).all()
    assert (bench.subjects[cross.pairs[:, 0]] != bench.subjects[cross.pairs[:, 1]]).all()
    assert np.array_equal(draw_cross_impostors(bench, 7, seed=3).pairs, cross.pairs)
    cross.save(tmp_path / "cross.npz")
    again = CrossGroupImpostors.load(tmp_path / "cross.npz", bench)
    assert np.array_equal(again.pairs, cross.pairs) and again.group_names == bench.group_names

    half = {"images": bench.images[:160], "issame": bench.issame[:80], "groups": bench.groups[:80]}
    smaller = dataclasses.replace(bench, subjects=bench.subjects[:160], **half)
    with pytest.raises(BenchmarkFormatError, match=r"cross.npz: pair rows outside the benchmark's 160 images"):
        CrossGroupImpostors.load(tmp_path / "cross.npz", smaller)
    renamed = dataclasses.replace(bench, group_names=("a", "b", "c", "d"))
    with pytest.raises(BenchmarkFormatError, match=r"groups \['alpha'.* are not the benchmark's \['a', 'b'"):
        CrossGroupImpostors.load(tmp_path / "cross.npz", renamed)
    wrong = {
        "moved.npz": (dataclasses.replace(cross, cells=cross.cells[::-1].copy()), "cells that are not the groups"),
        "float.npz": (
            dataclasses.replace(cross, pairs=cross.pairs.astype(float)),
            r"float64 .* \(expected both M×2 int",
        ),
    }
    for name, (damaged, problem) in wrong.items():
        damaged.save(tmp_path / name)
        with pytest.raises(BenchmarkFormatError, match=rf"{name}: .*{problem}"):
            CrossGroupImpostors.load(tmp_path / name, bench)
    shared = dataclasses.replace(bench, subjects=np.zeros_like(bench.subjects))
    with pytest.raises(ValueError, match="shows one subject twice"):
        draw_cross_impostors(shared, pairs_per_cell=7, seed=3)


def test_previews_are_one_grid_per_group(world: ProceduralFaceWorld, tmp_path) -> None:
    paths = write_previews(world, tmp_path, identities=2, samples=3, seed=0)
    assert [p.stem for p in paths] == world.group_names
    with Image.open(paths[0]) as grid:
        assert grid.size == (3 * 112 + 2 * 2, 2 * 112 + 2)


def test_data_preview_cli_writes_a_grid_per_group(tmp_path) -> None:
    from pathlib import Path

    from click.testing import CliRunner

    from factory.cli import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tinyfar_synthdistill.yaml"
    args = ["data", "preview", str(recipe), "--out", str(tmp_path), "--identities", "2", "--samples", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["alpha.png", "beta.png", "delta.png", "gamma.png"]


def test_benchmark_layout_uses_the_protocols_folds() -> None:
    from factory.data.benchmark import N_FOLDS as LAYOUT_FOLDS
    from factory.evaluate.verification import N_FOLDS

    assert LAYOUT_FOLDS == N_FOLDS
