"""Real and synthetic faces at one ratio inside every group (seed 000), and the static sets they are drawn from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from factory.data.real_synthetic import plan_counts, real_count
from factory.data.sources import (
    FilesSourceConfig,
    ProceduralSetSourceConfig,
    ProceduralSourceConfig,
    RealSyntheticSourceConfig,
    SourceContext,
)
from factory.data.static import RenderedSet
from factory.data.world.renderer import ProceduralFaceWorld
from factory.recipe import RecipeError, load_recipe

GROUPS = ["alpha", "beta", "gamma", "delta"]


class SketchWorld(ProceduralFaceWorld):
    """The real world's latents and groups, with a cheap "render" that still draws from the batch's generator."""

    def synthesis(self, w: torch.Tensor, generator: torch.Generator | None = None, nuisance: float = 1.0) -> Any:
        return torch.randint(0, 256, (len(w), 3, 2, 2), generator=generator, dtype=torch.uint8)


@pytest.fixture(scope="module")
def sketch() -> ProceduralFaceWorld:
    return SketchWorld()


def where(world: ProceduralFaceWorld, batch_size: int = 40, labelled: bool = False) -> SourceContext:
    return SourceContext(world=world, batch_size=batch_size, seed=0, split="distill", labelled=labelled)


def mix(share: float = 0.7, sampling: str = "static", balance: str = "equal", **real: Any) -> RealSyntheticSourceConfig:
    stand_in = ProceduralSetSourceConfig(**{"identities_per_group": 3, "images_per_identity": 2, **real})
    synthetic = ProceduralSourceConfig(sampling=sampling, group_balance=balance, adaptive_strength=50.0)
    return RealSyntheticSourceConfig(real=stand_in, synthetic=synthetic, real_share=share)


def per_group(batch: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
    """(real, synthetic) images of every group in a batch: real samples have keys, synthetic ones -1."""
    real = torch.bincount(batch["groups"][batch["keys"] >= 0], minlength=4)
    synthetic = torch.bincount(batch["groups"][batch["keys"] < 0], minlength=4)
    return list(zip(real.tolist(), synthetic.tolist(), strict=True))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ the batch plan


def test_every_group_is_seventy_percent_real_in_every_batch(sketch: ProceduralFaceWorld) -> None:
    source = mix().open(where(sketch, batch_size=40))
    for step in range(4):
        batch = source.batch(step)
        assert per_group(batch) == [(7, 3)] * 4, step
        assert (batch["keys"][:28] >= 0).all() and (batch["keys"][28:] == -1).all()  # real first, then synthetic
        source.feedback(step, batch, {})


def test_small_batches_round_by_the_largest_remainder() -> None:
    assert real_count(16, 0.7) == 11 and real_count(64, 0.7) == 45 and real_count(40, 0.7) == 28
    # 16 faces, 4 groups of 4, 11 real: 2.75 per group, the three extra images dealt round-robin from group `first`.
    real, synthetic = plan_counts(torch.ones(4), 16, 11, first=1)
    assert real.tolist() == [2, 3, 3, 3] and synthetic.tolist() == [2, 1, 1, 1]
    # Adaptive parts (6, 2, 2, 2) of 12 with 8 real: 4 + 1⅓ + 1⅓ + 1⅓, the one extra image to group 1 (ties from 0).
    real, synthetic = plan_counts(torch.tensor([3.0, 1, 1, 1]), 12, 8, first=0)
    assert real.tolist() == [4, 2, 1, 1] and synthetic.tolist() == [2, 0, 1, 1]
    for first in range(4):
        for batch_size in range(4, 70, 3):
            parts = torch.tensor([5.0, 1.0, 2.0, 3.0])
            r, s = plan_counts(parts, batch_size, real_count(batch_size, 0.7), first)
            exact = (r + s) * real_count(batch_size, 0.7) / batch_size
            assert ((r - exact).abs() < 1).all() and (s >= 0).all() and int(r.sum()) == real_count(batch_size, 0.7)


def test_batches_are_a_function_of_the_step_alone(sketch: ProceduralFaceWorld) -> None:
    ctx = where(sketch, batch_size=16)
    first, second = mix().open(ctx), mix().open(ctx)
    for step in range(5):
        first.batch(step)  # draws before step 5 render identities of the set the second source never drew
    assert same(first.batch(5), second.batch(5))
    assert not torch.equal(first.batch(6)["keys"], first.batch(7)["keys"])


def test_resume_between_a_fresh_and_a_resampled_step(sketch: ProceduralFaceWorld) -> None:
    cfg, ctx = mix(sampling="dynamic"), where(sketch, batch_size=16)
    source = cfg.open(ctx)
    fresh = source.batch(0)
    source.feedback(0, fresh, {"agreement": torch.linspace(-1, 1, 16)})
    state = source.state_dict()
    assert set(state) == {"plan", "seen", "synthetic"} and set(state["synthetic"]) == {"pending", "balance"}
    resumed = cfg.open(ctx)
    resumed.load_state_dict(state)
    moved, again = source.batch(1), resumed.batch(1)
    assert same(moved, again) and per_group(moved) == per_group(fresh)  # the pair's groups and plan are kept
    assert resumed.report() == source.report()
    with pytest.raises(ValueError, match=r"real/synthetic source state holds \['seen'\]"):
        resumed.load_state_dict({"seen": state["seen"]})


def test_feedback_reaches_the_synthetic_part_only(sketch: ProceduralFaceWorld) -> None:
    source = mix(sampling="dynamic").open(where(sketch, batch_size=16))
    batch = source.batch(0)
    agreement = torch.linspace(-1, 1, 16)
    source.feedback(0, batch, {"agreement": agreement})
    pending = source.state_dict()["synthetic"]["pending"]
    assert torch.equal(pending["agreement"], agreement[11:])  # 11 real images first, then the 5 synthetic ones
    assert torch.equal(pending["groups"], batch["groups"][11:])


def test_an_adaptive_balance_learns_from_the_synthetic_faces_and_plans_the_whole_batch(
    sketch: ProceduralFaceWorld,
) -> None:
    source = mix(balance="adaptive").open(where(sketch, batch_size=40))
    batch = source.batch(0)
    synthetic = batch["keys"] < 0
    # The student does badly on real alpha faces and on synthetic gamma faces: only the synthetic ones count.
    bad = (synthetic & (batch["groups"] == 2)) | (~synthetic & (batch["groups"] == 0))
    source.feedback(0, batch, {"agreement": torch.where(bad, -1.0, 1.0)})
    parts = [r + s for r, s in per_group(source.batch(1))]
    assert max(parts) == parts[2] > parts[0] == parts[1] == parts[3]
    for real, synthetic_n in per_group(source.batch(1)):
        assert abs(real - 0.7 * (real + synthetic_n)) < 1  # the ratio holds inside the larger part too


def test_real_share_one_is_real_images_only(sketch: ProceduralFaceWorld) -> None:
    cfg = mix(share=1.0)
    source = cfg.open(where(sketch, batch_size=8))
    batch = source.batch(0)
    assert (batch["keys"] >= 0).all() and per_group(batch) == [(2, 0)] * 4 and source.synthetic is None
    assert cfg.describe(where(sketch)).startswith("real_synthetic 100/0 per group (real only): real procedural_set")
    assert source.state_dict()["synthetic"] == {}


def test_a_share_that_rounds_one_part_away_is_refused(sketch: ProceduralFaceWorld) -> None:
    with pytest.raises(ValueError, match=r"real_share 0.05 of a batch of 8 is 0 real and 8 synthetic images"):
        mix(share=0.05).open(where(sketch, batch_size=8))
    with pytest.raises(ValueError, match="no single label space"):
        mix().open(where(sketch, labelled=True))


def test_composition_counts_what_was_drawn(sketch: ProceduralFaceWorld) -> None:
    cfg = mix()
    assert cfg.describe(where(sketch)) == (
        "real_synthetic 70/30 per group: real procedural_set:distill-set (3 identities per group x 2 images) + "
        "synthetic procedural:distill"
    )
    source = cfg.open(where(sketch, batch_size=16))
    seen = torch.zeros(4, 2, dtype=torch.long)
    for step in range(6):
        for g, (r, s) in enumerate(per_group(source.batch(step))):
            seen[g] += torch.tensor([r, s])
    composition = source.report()["composition"]
    assert (composition["real"], composition["synthetic"], composition["real_share"]) == (66, 30, 0.7)
    for g, name in enumerate(GROUPS):
        row = composition["groups"][name]
        assert [row["real"], row["synthetic"]] == seen[g].tolist()
        assert row["real_share"] == pytest.approx(row["real"] / (row["real"] + row["synthetic"]))


# ------------------------------------------------------------------------------------------ the procedural set


def test_the_procedural_set_is_fixed_finite_and_its_own_split() -> None:
    world = ProceduralFaceWorld()
    cfg = ProceduralSetSourceConfig(identities_per_group=1, images_per_identity=2)
    source = cfg.open(where(world, batch_size=8, labelled=True))
    assert source.num_classes == 4 and len(source.images) == 8
    assert {k.split("/")[0] for k in source.images.ids.keys} == {"distill-set"}  # not the benchmark's, not online
    batch = source.batch(0)
    assert torch.bincount(batch["groups"], minlength=4).tolist() == [2, 2, 2, 2]
    index, flip = batch["keys"] // 2, batch["keys"] % 2
    assert torch.equal(batch["labels"], index // 2) and torch.equal(batch["groups"], source.images.groups[index])
    other = RenderedSet(world, "distill-set", 1, 2, seed=0)  # drawn in another order: the same images
    for i in reversed(range(len(batch["keys"]))):
        image = other.image(int(index[i]))
        assert torch.equal(batch["pixels"][i], image.flip(-1) if flip[i] else image)
    assert not torch.equal(other.image(0), other.image(1))  # an identity's images differ (nuisances)
    with pytest.raises(ValueError, match="benchmark's identities"):
        RenderedSet(world, "benchmark", 2, 3, seed=0)


# ------------------------------------------------------------------------------------------------- real files


def write_faces(root: Path, layout: dict[str, list[str]]) -> Path:
    """``folder -> image names`` under ``root``, each a 112x112 PNG of its own, lopsided (a flip shows)."""
    ramp = np.arange(112)[None, :, None].repeat(112, axis=0).repeat(3, axis=2)
    for i, (folder, names) in enumerate(layout.items()):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for j, name in enumerate(names):
            Image.fromarray(((ramp + 10 * i + j) % 256).astype(np.uint8)).save(root / folder / name)
    return root


def stored(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def files_mix(path: Path, mapping: Path | None = None) -> RealSyntheticSourceConfig:
    real = FilesSourceConfig(path=str(path), group_mapping=None if mapping is None else str(mapping))
    return RealSyntheticSourceConfig(real=real, synthetic=ProceduralSourceConfig(), real_share=0.5)


def test_real_files_without_groups_are_refused_with_their_path(tmp_path: Path) -> None:
    world = ProceduralFaceWorld()
    flat = write_faces(tmp_path / "imagefolder", {"ann": ["0.png"], "bob": ["0.png"]})
    with pytest.raises(ValueError, match=rf"{flat}: its images have no group \(expected a BUPT <group>/"):
        files_mix(flat).open(where(world, batch_size=8))
    foreign = write_faces(tmp_path / "bupt", {f"{g}/id{g}": ["0.png"] for g in ["alpha", "beta", "gamma", "omega"]})
    with pytest.raises(ValueError, match=rf"{foreign}: group 'omega' is not one of the world's groups"):
        files_mix(foreign).open(where(world, batch_size=8))
    partial = write_faces(tmp_path / "three", {f"{g}/id{g}": ["0.png"] for g in ["alpha", "beta", "gamma"]})
    with pytest.raises(ValueError, match=rf"{partial}: no images of group 'delta'"):
        files_mix(partial).open(where(world, batch_size=8))
    mapping = tmp_path / "groups.csv"
    mapping.write_text("ann,alpha\n")
    with pytest.raises(ValueError, match=r"1 identities have no group in .*groups.csv, e.g. \['bob'\]"):
        files_mix(flat, mapping).open(where(world, batch_size=8))
    # Files with groups of their own have them renamed by the mapping: an identity mapping names none of them.
    with pytest.raises(ValueError, match=r"its group 'alpha', 'beta', 'gamma' has no line in .*groups.csv"):
        files_mix(partial, mapping).open(where(world, batch_size=8))
    with pytest.raises(ValueError, match="a files source on its own does not use groups"):
        FilesSourceConfig(path=str(flat), group_mapping=str(mapping)).open(where(world, batch_size=8))


def test_real_files_take_their_groups_from_a_mapping(tmp_path: Path) -> None:
    world = ProceduralFaceWorld()
    flat = write_faces(tmp_path / "faces", {f"person{i}": ["0.png", "1.png"] for i in range(4)})
    mapping = tmp_path / "groups.csv"
    mapping.write_text("".join(f"person{i},{g}\n" for i, g in enumerate(GROUPS)))
    cfg = files_mix(flat, mapping)
    assert cfg.describe(where(world)).startswith(f"real_synthetic 50/50 per group: real {flat} (groups from {mapping})")
    source = cfg.open(where(world, batch_size=8))
    batch = source.batch(0)
    assert per_group(batch) == [(1, 1)] * 4
    real = batch["keys"] >= 0
    index, flip = batch["keys"][real] // 2, batch["keys"][real] % 2
    assert torch.equal(batch["groups"][real], index // 2)  # person<i>'s two images are files 2i, 2i+1: group i
    assert flip.any() and not flip.all()
    for pixels, i, f in zip(batch["pixels"][real], index.tolist(), flip, strict=True):
        image = stored(flat / f"person{i // 2}" / f"{i % 2}.png")  # the folder's order: sorted names
        assert torch.equal(pixels, image.flip(-1) if f else image)


def test_a_mapping_renames_bupt_races_to_the_worlds_groups(tmp_path: Path) -> None:
    races = ["African", "Asian", "Caucasian", "Indian"]  # BUPT-BalancedFace's folders, RFW's races
    bupt = write_faces(tmp_path / "bupt", {f"{race}/m.{i}": ["0.png"] for i, race in enumerate(races)})
    mapping = tmp_path / "races.csv"
    mapping.write_text("".join(f"{race},{group}\n" for race, group in zip(races, GROUPS, strict=True)))
    images = FilesSourceConfig(path=str(bupt), group_mapping=str(mapping)).grouped(where(ProceduralFaceWorld()))
    assert images.groups.tolist() == [0, 1, 2, 3]  # the folder's order: African, Asian, Caucasian, Indian
    mapping.write_text("African,alpha\nAsian,beta\n")
    with pytest.raises(ValueError, match=r"its group 'Caucasian', 'Indian' has no line in .*races.csv \(files with "):
        FilesSourceConfig(path=str(bupt), group_mapping=str(mapping)).grouped(where(ProceduralFaceWorld()))
    mapping.write_text("".join(f"{race},{race.lower()}\n" for race in races))
    with pytest.raises(ValueError, match=r"group 'african', .* is not one of the world's groups .* or rename them"):
        FilesSourceConfig(path=str(bupt), group_mapping=str(mapping)).grouped(where(ProceduralFaceWorld()))


def test_a_flat_folder_for_distillation_is_keyed_by_image_and_flip(tmp_path: Path) -> None:
    faces = write_faces(tmp_path, {"dump": [f"{i}.png" for i in range(5)]})
    source = FilesSourceConfig(path=str(faces / "dump")).open(where(ProceduralFaceWorld(), batch_size=12))
    batch = source.batch(3)
    index, flip = batch["keys"] // 2, batch["keys"] % 2
    assert flip.any() and (~flip.bool()).any() and int(index.max()) < 5
    for pixels, i, f in zip(batch["pixels"], index.tolist(), flip, strict=True):
        image = stored(faces / "dump" / f"{i}.png")
        assert torch.equal(pixels, image.flip(-1) if f else image)
    assert torch.equal(source.batch(3)["keys"], batch["keys"])


# -------------------------------------------------------------------------------------- a fixed synthetic set


def file_sets(root: Path) -> tuple[Path, Path, Path]:
    """A BUPT-style real folder (3 images per group) and a flat synthetic one with an identity,group mapping (2 per
    group), every image different from every other."""
    real = write_faces(root / "real", {f"{g}/{g}{i}": ["0.png"] for g in GROUPS for i in range(3)})
    synthetic = write_faces(root / "synthetic", {f"s{g}{i}": ["0.png"] for g in GROUPS for i in range(2)})
    mapping = root / "synthetic.csv"
    mapping.write_text("".join(f"s{g}{i},{g}\n" for g in GROUPS for i in range(2)))
    return real, synthetic, mapping


def file_set_mix(root: Path, share: float = 0.7) -> RealSyntheticSourceConfig:
    real, synthetic, mapping = file_sets(root)
    return RealSyntheticSourceConfig(
        real=FilesSourceConfig(path=str(real)),
        synthetic=FilesSourceConfig(path=str(synthetic), group_mapping=str(mapping)),
        real_share=share,
    )


def test_a_grouped_file_set_as_the_synthetic_part_keeps_every_groups_ratio_exactly(tmp_path: Path) -> None:
    cfg, world = file_set_mix(tmp_path), ProceduralFaceWorld()
    assert cfg.describe(where(world)) == (
        f"real_synthetic 70/30 per group: real {tmp_path / 'real'} + synthetic {tmp_path / 'synthetic'} "
        f"(groups from {tmp_path / 'synthetic.csv'})"
    )
    source = cfg.open(where(world, batch_size=40))
    offset = 2 * 12  # the real set's keys: 12 images x 2 flips
    synthetic_names = sorted(f"s{g}{i}" for g in GROUPS for i in range(2))  # the flat folder's order
    for step in range(4):
        batch = source.batch(step)
        real, synthetic = batch["keys"] < offset, batch["keys"] >= offset
        assert real[:28].all() and synthetic[28:].all()  # 28 real images first, then 12 synthetic
        counts = [
            (int((real & (batch["groups"] == g)).sum()), int((synthetic & (batch["groups"] == g)).sum()))
            for g in range(4)
        ]
        assert counts == [(7, 3)] * 4, step
        index, flip = (batch["keys"][28:] - offset) // 2, batch["keys"][28:] % 2
        for pixels, group, i, f in zip(batch["pixels"][28:], batch["groups"][28:], index.tolist(), flip, strict=True):
            name = synthetic_names[i]
            assert GROUPS[int(group)] == name[1:-1]  # its group is its mapping's
            image = stored(tmp_path / "synthetic" / name / "0.png")
            assert torch.equal(pixels, image.flip(-1) if f else image)
        source.feedback(step, batch, {"agreement": torch.zeros(40)})  # a fixed set learns nothing from it
    composition = source.report()["composition"]
    assert (composition["real"], composition["synthetic"]) == (4 * 28, 4 * 12)
    assert source.state_dict()["synthetic"] == {}


def test_a_fixed_synthetic_set_is_a_function_of_the_step_and_resumes(tmp_path: Path) -> None:
    cfg, ctx = file_set_mix(tmp_path), where(ProceduralFaceWorld(), batch_size=16)
    first, second = cfg.open(ctx), cfg.open(ctx)
    for step in range(3):
        first.feedback(step, first.batch(step), {"agreement": torch.rand(16)})
    resumed = cfg.open(ctx)
    resumed.load_state_dict(first.state_dict())
    assert same(first.batch(3), second.batch(3)) and same(resumed.batch(4), second.batch(4))
    composition = resumed.report()["composition"]  # three steps before the resume, one after
    assert (composition["real"], composition["synthetic"]) == (4 * 11, 4 * 5)
    assert not torch.equal(first.batch(5)["keys"][11:], first.batch(6)["keys"][11:])
    with pytest.raises(ValueError, match=r"a fixed synthetic set has no state, got \['pending'\]"):
        resumed.load_state_dict(
            {"plan": None, "seen": torch.zeros(4, 2, dtype=torch.long), "synthetic": {"pending": 1}}
        )


def test_keys_of_the_real_and_the_synthetic_set_never_collide(sketch: ProceduralFaceWorld, tmp_path: Path) -> None:
    stand_ins = RealSyntheticSourceConfig(
        real=ProceduralSetSourceConfig(identities_per_group=3, images_per_identity=2),
        synthetic=ProceduralSetSourceConfig(identities_per_group=1, images_per_identity=2),
        real_share=0.5,
    )
    # The synthetic procedural set is of its own split: not the real stand-in's identities.
    assert stand_ins.describe(where(sketch)).endswith(
        "synthetic procedural_set:distill-synthetic-set (1 identities per group x 2 images)"
    )
    for cfg, ctx in (
        (stand_ins, where(sketch, batch_size=16)),
        (file_set_mix(tmp_path), where(ProceduralFaceWorld(), batch_size=16)),
    ):
        source = cfg.open(ctx)
        real_total = source.real_total
        pixels_of: dict[int, torch.Tensor] = {}
        real_keys, synthetic_keys = set(), set()
        for step in range(12):
            batch = source.batch(step)
            real_keys |= set(batch["keys"][:real_total].tolist())
            synthetic_keys |= set(batch["keys"][real_total:].tolist())
            for key, pixels in zip(batch["keys"].tolist(), batch["pixels"], strict=True):
                assert torch.equal(pixels_of.setdefault(key, pixels), pixels), key  # a key is one image
        assert min(synthetic_keys) >= 2 * len(source.real) > max(real_keys) and min(real_keys) >= 0


# ------------------------------------------------------------------------------------------------- the recipe


def test_check_refuses_a_bad_share_and_real_parts_without_groups(tmp_path: Path) -> None:
    def issues(source: str) -> list[str]:
        path = tmp_path / "r.yaml"
        path.write_text(f"distill:\n  source:\n{source}")
        with pytest.raises(RecipeError) as err:
            load_recipe(path)
        return [str(i) for i in err.value.issues]

    path = tmp_path / "r.yaml"
    assert issues("    kind: real_synthetic\n    real: {kind: procedural_set}\n    real_share: 0\n") == [
        f"{path}:5: distill.source.real_share: got 0.0 (expected a number in (0, 1]: 1 is real images only; for "
        "synthetic only, use the synthetic source)"
    ]
    assert issues("    kind: real_synthetic\n") == [
        f"{path}:2: distill.source.real: missing (expected real images with groups, a source of kind: files, "
        "procedural_set)"
    ]
    assert issues("    kind: real_synthetic\n    real: {kind: files}\n") == [
        f"{path}:4: distill.source.real.path: missing (expected the path of a RecordIO pack, an image folder or a list)"
    ]
    assert issues(
        "    kind: real_synthetic\n    real: {kind: procedural}\n    synthetic: {kind: stylegan, pickle: ., "
        "code_dir: ., trust_pickle: true}\n"
    ) == [
        f"{path}:4: distill.source.real.kind: got 'procedural', which is no fixed set of images with groups "
        "(expected one of: files, procedural_set)",
        f"{path}:5: distill.source.synthetic.kind: got 'stylegan', whose faces can neither be rendered in the groups "
        "a batch needs nor drawn from a fixed set with groups (expected one of: procedural, rendered per group; "
        "files, procedural_set, a fixed set with groups; kind mix shares the batch by one global ratio instead)",
    ]
    mapping = tmp_path / "dcface.csv"
    mapping.write_text("0,alpha\n")
    for synthetic in ("{kind: procedural_set}", f"{{kind: files, path: ., group_mapping: {mapping}}}"):
        path.write_text(
            f"distill:\n  source:\n    kind: real_synthetic\n    real: {{kind: files, path: .}}\n"
            f"    synthetic: {synthetic}\n"
        )
        assert hasattr(load_recipe(path).distill.source.synthetic, "grouped"), synthetic
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "mixed_70_30_kd.yaml")
    source = recipe.distill.source
    assert (source.real_share, source.real.kind, source.synthetic.sampling) == (0.7, "procedural_set", "dynamic")
