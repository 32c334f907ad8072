"""MST-KD: several specialised teachers, the adaptors, a-KD and EAF-KD, the adaptor's training, freezing and resume."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from distill_toys import TinyFaceNet
from mst_toys import GROUPS, TOY, register_toy
from mst_toys import config as mst_config
from PIL import Image
from torch import nn

from factory.data.sources import (
    FileBatches,
    FilesSourceConfig,
    LabelledWorldBatches,
    ProceduralSourceConfig,
    SourceContext,
)
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.splits import identity_set
from factory.distill.adaptors import ADAPTORS, create_adaptor
from factory.distill.methods import DISTILL_METHODS, MethodContext
from factory.distill.methods.mst_kd import (
    ADAPTOR_FILE,
    MSTKD,
    MSTKDTask,
    a_kd_loss,
    adaptor_train,
    concat_teachers,
    load_adaptor,
)
from factory.distill.stage import distill_student, open_source
from factory.models.checkpoint import read_checkpoint, save_model
from factory.models.external import load_teacher
from factory.models.heads import create_head
from factory.models.zoo import create_model
from factory.pipeline.cache import path_fields, stage_key, stage_material
from factory.pipeline.stage import BuiltArtifact, StageContext, StageOutput
from factory.recipe import Recipe, RecipeError, TeacherConfig, TrainConfig, WorldConfig, load_recipe
from factory.release.stage import _teacher_lineage
from factory.train.loop import RESUME_FILE, fit
from factory.train.stage import STAGE as TEACHER_STAGE
from factory.train.stage import train_teacher
from factory.train.tasks import model_input

ROOT = Path(__file__).resolve().parents[1]
MST_RECIPE = ROOT / "recipes" / "mst_kd.yaml"

# ------------------------------------------------------------------------------------------------------ adaptors

# name -> its layers, in order, for four 512-d teachers and a 512-d student (the paper's sizes)
GOLDEN_LAYERS = {
    "sl": [("Linear", 2048, 512)],
    "dul": [("Linear", 2048, 512), ("LeakyReLU", 0.01), ("Linear", 512, 512)],
    "dldp": [("Linear", 2048, 512), ("Dropout", 0.2), ("LeakyReLU", 0.01), ("Linear", 512, 512)],
}
GOLDEN_PARAMS = {"sl": 2048 * 512 + 512, "dul": 2048 * 512 + 512 + 512 * 512 + 512, "dldp": 1_311_744}


def describe_layer(layer: nn.Module) -> tuple[Any, ...]:
    if isinstance(layer, nn.Linear):
        return ("Linear", layer.in_features, layer.out_features)
    if isinstance(layer, nn.LeakyReLU):
        return ("LeakyReLU", layer.negative_slope)
    if isinstance(layer, nn.Dropout):
        return ("Dropout", layer.p)
    return (type(layer).__name__,)


@pytest.mark.parametrize("name", sorted(GOLDEN_LAYERS))
def test_adaptor_layers_and_sizes_are_the_papers(name: str) -> None:
    assert ADAPTORS.names() == sorted(GOLDEN_LAYERS)
    adaptor = create_adaptor(name, 4 * 512, 512)
    assert [describe_layer(layer) for layer in adaptor] == GOLDEN_LAYERS[name]
    assert sum(p.numel() for p in adaptor.parameters()) == GOLDEN_PARAMS[name]
    x = torch.randn(6, 2048)
    assert adaptor(x).shape == (6, 512)
    adaptor.eval()
    assert torch.equal(adaptor(x), adaptor(x))  # deterministic once frozen: dropout is off in eval mode


def test_only_dldp_is_random_while_training() -> None:
    # Dropout before or after LeakyReLU gives the same values (the activation is positively homogeneous), so the
    # golden order above is what says "before the activation"; this says the dropout is live while training.
    torch.manual_seed(0)
    x = torch.randn(16, 64)
    for name in ADAPTORS.names():
        adaptor = create_adaptor(name, 64, 8).train()
        assert torch.equal(adaptor(x), adaptor(x)) == (name != "dldp"), name


# ---------------------------------------------------------------------------------------------------- the losses


def test_a_kd_loss_by_hand() -> None:
    student = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # normalised: [0.6, 0.8], [1, 0]
    target = torch.tensor([[0.0, 2.0], [0.0, 5.0]])  # normalised: [0, 1], [0, 1]
    # squared differences 0.36, 0.04, 1, 1: mean 0.6; times lambda
    assert a_kd_loss(student, target, 10000.0).item() == pytest.approx(6000.0)
    assert a_kd_loss(student, target, 1.0).item() == pytest.approx(0.6)
    assert a_kd_loss(target, target, 10000.0).item() == 0.0


def toy_teachers(n: int = 4) -> list[nn.Module]:
    torch.manual_seed(1)
    return [TinyFaceNet().eval() for _ in range(n)]


def test_teachers_are_concatenated_normalised_in_their_order() -> None:
    teachers = toy_teachers(3)
    pixels = torch.randint(0, 256, (5, 3, 112, 112), dtype=torch.uint8)
    fused = concat_teachers(teachers, pixels)
    assert fused.shape == (5, 24)
    blocks = fused.split(8, dim=1)
    for block in blocks:
        assert torch.allclose(block.norm(dim=1), torch.ones(5))
    # Block i is teacher i: the order is the list's, and another order is another input.
    swapped = concat_teachers([teachers[1], teachers[0], teachers[2]], pixels)
    assert torch.equal(swapped.split(8, dim=1)[0], blocks[1]) and torch.equal(swapped.split(8, dim=1)[1], blocks[0])
    assert not torch.equal(swapped, fused)


@pytest.mark.parametrize("loss", ["a_kd", "eaf_kd"])
def test_the_student_loss_is_lambda_mse_plus_ce_for_eaf_kd(loss: str) -> None:
    teachers = toy_teachers()
    torch.manual_seed(2)
    adaptor, student = create_adaptor("dul", 32, 8), TinyFaceNet()
    # sigma 0: the margin is fixed, so the head's logits can be recomputed by hand
    head = create_head("elastic_arcface", 8, 6, scale=16.0, margin_std=0.0) if loss == "eaf_kd" else None
    task = MSTKDTask(teachers, adaptor, head, weight=100.0)
    batch = {"pixels": torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8), "labels": torch.tensor([0, 5, 2, 2])}
    out = task(student, batch)
    with torch.no_grad():  # each model's input through its own contract, as the loop feeds it
        fused = torch.cat([F.normalize(t(model_input(t, batch["pixels"]))) for t in teachers], dim=1)
        target = F.normalize(adaptor(fused))
        embedding = student(model_input(student, batch["pixels"]))
        mse = ((F.normalize(embedding) - target) ** 2).mean()
        expected = 100.0 * mse
        if head is not None:
            expected = expected + F.cross_entropy(head(embedding, batch["labels"]), batch["labels"])
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.terms["kd"] == pytest.approx(100.0 * mse.item(), rel=1e-5)
    assert ("ce" in out.terms) == (loss == "eaf_kd")
    assert out.per_sample["agreement"].shape == (4,)


def test_adaptor_schedule_is_the_students_scaled_to_its_steps() -> None:
    student = TrainConfig(steps=250, lr=0.1, schedule="multistep", milestones=[77, 135, 192, 240], warmup_steps=10)
    cfg = adaptor_train(student, 100, 1.0)
    assert (cfg.steps, cfg.lr, cfg.milestones, cfg.warmup_steps) == (100, 1.0, [31, 54, 77, 96], 4)
    assert (cfg.optimizer, cfg.momentum, cfg.batch_size) == (student.optimizer, student.momentum, student.batch_size)
    same = adaptor_train(student, None, 1.0)
    assert (same.steps, same.milestones, same.warmup_steps) == (250, student.milestones, 10)


# ------------------------------------------------------------------------------------------ several teachers


def spy_on_sources(monkeypatch: pytest.MonkeyPatch, cls: type, key: str, seen: str) -> list[Any]:
    """Every ``cls`` source opened from now on, each gathering the ``key`` values of its batches in ``.<seen>``."""
    opened: list[Any] = []
    init, batch = cls.__init__, cls.batch

    def spy_init(self: Any, *args: Any) -> None:
        init(self, *args)
        setattr(self, seen, set())
        opened.append(self)

    def spy_batch(self: Any, step: int) -> dict[str, Any]:
        out = batch(self, step)
        getattr(self, seen).update(out[key].tolist())
        return out

    monkeypatch.setattr(cls, "__init__", spy_init)
    monkeypatch.setattr(cls, "batch", spy_batch)
    return opened


@pytest.fixture
def teacher_sources(monkeypatch: pytest.MonkeyPatch) -> list[LabelledWorldBatches]:
    """Every labelled world source a stage opens, with the groups of every batch it gave."""
    return spy_on_sources(monkeypatch, LabelledWorldBatches, "groups", "seen_groups")


def teacher_stage(tmp_path: Path, **kw: Any) -> tuple[Any, StageContext]:
    register_toy()
    train = TrainConfig(steps=2, batch_size=8, checkpoint_every=100, tensorboard=False, channels_last=False)
    kw.setdefault("source", ProceduralSourceConfig())
    cfg = TeacherConfig(model=TOY, identities_per_group=4, train=train, **kw)
    work = tmp_path / "teacher"
    work.mkdir(parents=True, exist_ok=True)
    ctx = StageContext({"teacher": cfg, "world": WorldConfig(), "seed": 0}, work, {}, None, progress=False)
    return train_teacher(ctx), ctx


def test_per_group_teachers_train_on_their_group_only(tmp_path: Path, teacher_sources: list) -> None:
    made, ctx = teacher_stage(tmp_path, specialists="per_group")
    world = ProceduralFaceWorld()
    names = [f"teacher_{g}" for g in world.group_names]
    assert [a.name for a in made.artifacts] == names == made.metrics["teachers"]
    assert all(a.reference and a.files == (f"{a.name}.pt",) for a in made.artifacts)
    assert all((ctx.work_dir / f"{name}.pt").is_file() for name in names)
    assert len(teacher_sources) == 4
    everyone = set(identity_set(world, "teacher", per_group=4, seed=0).keys)  # what one teacher trains on
    for g, source in enumerate(teacher_sources):
        group = world.group_names[g]
        assert source.num_classes == 4 and {k.split("/")[1] for k in source.ids.keys} == {group}
        assert source.seen_groups == {g}  # every image of every batch
        assert made.metrics["per_teacher"][f"teacher_{group}"]["groups"] == [group]
    assert set().union(*(s.ids.keys for s in teacher_sources)) == everyone
    seeds = {t["seed"] for t in made.metrics["per_teacher"].values()}
    assert len(seeds) == 4  # each its own
    # The checkpoints differ: four teachers, not one trained four times.
    weights = [torch.load(ctx.work_dir / f"{n}.pt", weights_only=True)["state_dict"]["fc.weight"] for n in names]
    assert not any(torch.equal(weights[0], w) for w in weights[1:])


def test_balanced_teachers_share_every_group_disjointly(tmp_path: Path, teacher_sources: list) -> None:
    made, _ = teacher_stage(tmp_path, specialists="balanced", count=2)
    assert made.metrics["teachers"] == ["teacher_0", "teacher_1"]
    world = ProceduralFaceWorld()
    first, second = (set(s.ids.keys) for s in teacher_sources)
    assert not first & second and first | second == set(identity_set(world, "teacher", per_group=4, seed=0).keys)
    for source in teacher_sources:  # two identities of every group each
        assert sorted(k.split("/")[1] for k in source.ids.keys) == sorted(world.group_names * 2)
    # One teacher per group (count null): as many identities per teacher as a specialist has.
    made, _ = teacher_stage(tmp_path / "four", specialists="balanced")
    assert [t["identities"] for t in made.metrics["per_teacher"].values()] == [4, 4, 4, 4]


def test_a_finished_teacher_is_not_trained_again(tmp_path: Path, teacher_sources: list) -> None:
    made, ctx = teacher_stage(tmp_path, specialists="per_group")
    names = made.metrics["teachers"]
    before = {n: torch.load(ctx.work_dir / f"{n}.pt", weights_only=True) for n in names}
    (ctx.work_dir / "teacher_gamma.pt").unlink()  # as if killed while training gamma
    again, _ = teacher_stage(tmp_path, specialists="per_group")
    assert len(teacher_sources) == 4 + 1  # only gamma was trained again
    assert [t.get("reused", False) for t in again.metrics["per_teacher"].values()] == [True, True, False, True]
    after = {n: torch.load(ctx.work_dir / f"{n}.pt", weights_only=True) for n in names}
    for name in names:  # gamma trained again is the same run: the same weights and record
        assert after[name]["extra"] == before[name]["extra"]
        for key, value in before[name]["state_dict"].items():
            assert torch.equal(value, after[name]["state_dict"][key]), (name, key)


def test_one_teacher_stays_the_single_teacher_path(tmp_path: Path, teacher_sources: list) -> None:
    made, ctx = teacher_stage(tmp_path)
    assert [a.name for a in made.artifacts] == ["teacher"] and "teachers" not in made.metrics
    assert (ctx.work_dir / "teacher.pt").is_file() and teacher_sources[0].num_classes == 16


# ------------------------------------------------------------------------------- specialists on labelled files

RACES = ("African", "Asian", "Caucasian", "Indian")  # BUPT-BalancedFace's folders


def bupt_folder(root: Path) -> tuple[Path, Path]:
    """A tiny BUPT-style <race>/<identity>/<image> folder (two identities of every race, two images each) and the
    mapping of its races to the world's groups."""
    ramp = np.arange(112)[None, :, None].repeat(112, axis=0).repeat(3, axis=2)
    for r, race in enumerate(RACES):
        for i in range(2):
            folder = root / "bupt" / race / f"m.{race.lower()}{i}"
            folder.mkdir(parents=True)
            for j in range(2):
                Image.fromarray(((ramp + 40 * r + 10 * i + j) % 256).astype(np.uint8)).save(folder / f"{j}.png")
    mapping = root / "races.csv"
    mapping.write_text("".join(f"{race},{group}\n" for race, group in zip(RACES, GROUPS, strict=True)))
    return root / "bupt", mapping


@pytest.fixture
def file_sources(monkeypatch: pytest.MonkeyPatch) -> list[FileBatches]:
    """Every files source a stage opens, with the labels of every batch it gave."""
    return spy_on_sources(monkeypatch, FileBatches, "labels", "seen_labels")


def distill_from(made: Any, teacher_dir: Path, distill: Any, work: Path) -> Any:
    """Run the distill stage on a finished teacher stage's result (its metrics and artifacts)."""
    teachers = StageOutput("teacher", "teacher", teacher_dir, {}, made.metrics, made.artifacts, True, 0.0)
    work.mkdir()
    config = {"distill": distill, "world": WorldConfig(), "seed": 0}
    return distill_student(StageContext(config, work, {"teacher": teachers}, Recipe(), progress=False))


def test_per_group_teachers_on_bupt_folders_train_on_their_race_only(tmp_path: Path, file_sources: list) -> None:
    bupt, mapping = bupt_folder(tmp_path)
    source = FilesSourceConfig(path=str(bupt), group_mapping=str(mapping))
    made, ctx = teacher_stage(tmp_path, specialists="per_group", source=source)
    groups = ProceduralFaceWorld().group_names
    assert made.metrics["teachers"] == [f"teacher_{g}" for g in groups] == [a.name for a in made.artifacts]
    assert len(file_sources) == 4
    for race, group, opened in zip(RACES, groups, file_sources, strict=True):
        record = made.metrics["per_teacher"][f"teacher_{group}"]
        assert record["groups"] == [group] and record["identities"] == opened.num_classes == 2
        assert opened.ids.keys == [f"m.{race.lower()}0", f"m.{race.lower()}1"]
        # Every image it can draw is one of its race's, labelled by its identity.
        drawn = {
            (str(opened.dataset.images._dataset.index.paths[r].parent), label)
            for r, label in zip(opened.dataset.rows, opened.dataset.labels, strict=True)
        }
        assert drawn == {(str(bupt / race / f"m.{race.lower()}{i}"), i) for i in range(2)}
        assert opened.seen_labels <= {0, 1}
    assert len({t["seed"] for t in made.metrics["per_teacher"].values()}) == 4
    # MST-KD distils from them on the same folders, opened labelled: every identity of the files.
    distill = dataclasses.replace(mst_config(steps=2, adaptor_steps=2), source=FilesSourceConfig(path=str(bupt)))
    student = distill_from(made, ctx.work_dir, distill, tmp_path / "distill")
    assert student.metrics["teachers"] == made.metrics["teachers"] and student.metrics["data"] == str(bupt)
    assert file_sources[-1].num_classes == 8 and student.metrics["steps"] == 2


def test_balanced_teachers_on_files_share_every_race(tmp_path: Path, file_sources: list) -> None:
    bupt, mapping = bupt_folder(tmp_path)
    source = FilesSourceConfig(path=str(bupt), group_mapping=str(mapping))
    made, _ = teacher_stage(tmp_path, specialists="balanced", count=2, source=source)
    first, second = (set(s.ids.keys) for s in file_sources)
    assert first == {f"m.{race.lower()}0" for race in RACES} and second == {f"m.{race.lower()}1" for race in RACES}
    assert [t["identities"] for t in made.metrics["per_teacher"].values()] == [4, 4]


def test_specialists_on_files_without_groups_are_refused(tmp_path: Path) -> None:
    bupt, _ = bupt_folder(tmp_path)
    flat = tmp_path / "bupt" / "African"  # <identity>/<image>: an ImageFolder without groups
    with pytest.raises(
        ValueError,
        match=rf"teacher 'teacher_alpha' trains on its share of the identities, dealt by group, and {flat}: its "
        r"images have no group \(expected a BUPT <group>/<identity>/<image> folder",
    ):
        teacher_stage(tmp_path, specialists="per_group", source=FilesSourceConfig(path=str(flat)))
    with pytest.raises(ValueError, match=rf"and {bupt}: group 'African', .* is not one of the world's groups"):
        teacher_stage(tmp_path / "b", specialists="per_group", source=FilesSourceConfig(path=str(bupt)))


def test_the_paper_recipe_adopts_four_iresnet34_specialists_or_trains_them_on_bupt(tmp_path: Path) -> None:
    paper = ROOT / "recipes" / "paper" / "mst_kd.yaml"
    with pytest.raises(RecipeError) as refused:
        load_recipe(paper)
    assert refused.value.only_missing_assets
    stand_ins = []
    for issue in refused.value.issues:
        named = Path(issue.message.partition(" does not exist")[0])
        stand_in = tmp_path / named.name
        if named.suffix:
            stand_in.write_bytes(b"")
        elif not stand_in.exists():
            stand_in.mkdir()
        stand_ins.append(f"{issue.key}={stand_in}")
    recipe = load_recipe(paper, stand_ins)
    teacher, distill = recipe.teacher, recipe.distill
    assert list(teacher.checkpoints) == ["african", "asian", "caucasian", "indian"]
    assert teacher.model == distill.student == "iresnet34" and teacher.specialists == "none"
    assert distill.source.kind == "files" and distill.method.kind == "mst_kd" and distill.method.adaptor == "sl"
    assert (distill.method.loss, distill.method.lambda_kd, distill.method.adaptor_steps) == ("eaf_kd", 10000.0, None)
    per_epoch = -(-1_300_000 // 128)
    train = distill.train
    assert train.steps == 26 * per_epoch and train.milestones == [e * per_epoch for e in (8, 14, 20, 25)]
    assert (train.optimizer, train.lr, train.momentum, train.weight_decay, train.grad_clip_norm) == (
        "sgd",
        0.1,
        0.9,
        0.0005,
        5.0,
    )
    trained = load_recipe(paper, [*stand_ins, "teacher.checkpoints=null", "teacher.specialists=per_group"])
    assert trained.teacher.checkpoints is None and trained.teacher.source.group_mapping is not None


# --------------------------------------------------------------------------------- pre-trained teachers, adopted


def test_adopted_checkpoints_are_the_specialists_artifacts_in_the_mappings_order(tmp_path: Path) -> None:
    register_toy()
    order = ["delta", "alpha", "gamma"]  # not the world's order, nor sorted: the mapping's order is the record
    models, files = {}, {}
    for i, key in enumerate(order):
        torch.manual_seed(200 + i)
        models[key] = create_model(TOY).eval()
        files[key] = tmp_path / f"{key}.pth"
        if key == "alpha":  # a factory checkpoint; the others raw state dicts, as zoo weights come
            save_model(files[key], models[key])
        else:
            torch.save(models[key].state_dict(), files[key])
    cfg = TeacherConfig(model=TOY, checkpoints={k: str(files[k]) for k in order})
    work = tmp_path / "teacher"
    work.mkdir()
    ctx = StageContext({"teacher": cfg, "world": WorldConfig(), "seed": 0}, work, {}, None, progress=False)
    made = train_teacher(ctx)
    names = [f"teacher_{k}" for k in order]
    assert [a.name for a in made.artifacts] == names == made.metrics["teachers"]
    assert all(a.reference and a.files == (f"{a.name}.pt",) for a in made.artifacts)
    assert made.metrics["specialists"] == "adopted" and list(made.metrics["per_teacher"]) == names
    x = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    for key, artifact in zip(order, made.artifacts, strict=True):
        record = made.metrics["per_teacher"][artifact.name]
        assert record["source"] == str(files[key]) and record["model"] == TOY
        assert record["sha256"] == hashlib.sha256(files[key].read_bytes()).hexdigest()
        teacher = load_teacher(BuiltArtifact(artifact, work)).eval()
        with torch.no_grad():  # each teacher is its own file's weights, under its own name
            assert torch.equal(teacher(model_input(teacher, x)), models[key](model_input(models[key], x)))
    assert TEACHER_STAGE.trains(TEACHER_STAGE.config(load_recipe(MST_RECIPE))) is not None
    assert TEACHER_STAGE.trains({"teacher": cfg}) is None  # nothing to train: no DDP launch for it
    # MST-KD takes them unchanged, in their order.
    student = distill_from(made, work, mst_config(steps=2, adaptor_steps=2), tmp_path / "distill")
    assert student.metrics["teachers"] == names
    assert torch.load(tmp_path / "distill" / ADAPTOR_FILE, weights_only=False)["teachers"] == names
    assert read_checkpoint(tmp_path / "distill" / "student.pt")["extra"]["teachers"] == names
    lineage = _teacher_lineage(made.metrics)
    assert lineage.startswith(f"- teachers (adopted): {TOY}: teacher_delta from {files['delta']} (sha256 ")


def test_check_refuses_checkpoints_beside_checkpoint_or_specialists(tmp_path: Path) -> None:
    (tmp_path / "a.pth").write_bytes(b"")
    (tmp_path / "b.pth").write_bytes(b"")
    where = f"{tmp_path / 'r.yaml'}"
    both = "teacher:\n  checkpoint: a.pth\n  specialists: per_group\n  checkpoints: {alpha: a.pth, beta: b.pth}\n"
    assert check(tmp_path, both + MST) == [
        f"{where}:3: teacher.specialists: 'per_group' trains several teachers, and teacher.checkpoint adopts one "
        "(expected specialists: none with a checkpoint, or no checkpoint)",
        f"{where}:4: teacher.checkpoints: adopts several teachers, and teacher.checkpoint adopts one (expected one "
        "of the two: checkpoint for one teacher, checkpoints for several)",
        f"{where}:4: teacher.checkpoints: adopts pre-trained teachers, and specialists 'per_group' trains them "
        "(expected specialists: none with checkpoints, or no checkpoints)",
    ]
    assert check(tmp_path, "teacher:\n  checkpoints: {Alpha: a.pth, beta/1: b.pth}\n") == [
        f"{where}:2: teacher.checkpoints.Alpha: got the name 'Alpha' (expected lower-case letters, digits and '_', "
        "starting with a letter or digit, at most 64 characters: it names the artifact teacher_{name})",
        f"{where}:2: teacher.checkpoints.beta/1: got the name 'beta/1' (expected lower-case letters, digits and '_', "
        "starting with a letter or digit, at most 64 characters: it names the artifact teacher_{name})",
    ]
    assert check(tmp_path, "teacher:\n  checkpoints: {}\n") == [
        f"{where}:2: teacher.checkpoints: got an empty mapping (expected {{name: file, ...}}, or null)"
    ]
    assert check(tmp_path, "teacher:\n  checkpoints: {alpha: a.pth}\n" + MST) == [
        f"{where}:5: distill.method: mst_kd distils several teachers, and teacher.checkpoints adopts one: name at "
        "least two"
    ]
    assert check(tmp_path, "teacher:\n  checkpoints: {alpha: a.pth, beta: b.pth}\n" + MST) == []
    assert check(tmp_path, MST)[0].endswith("or adopt pre-trained ones with teacher.checkpoints")


def test_missing_checkpoints_are_missing_assets_and_the_files_key_the_stage(tmp_path: Path) -> None:
    (tmp_path / "a.pth").write_bytes(b"weights")
    path = tmp_path / "r.yaml"
    path.write_text("teacher:\n  checkpoints:\n    alpha: a.pth\n    beta: gone/b.pth\n" + MST)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    (issue,) = e.value.issues
    assert issue.asset and issue.key == "teacher.checkpoints.beta" and issue.line == 4
    assert issue.message == f"{tmp_path / 'gone' / 'b.pth'} does not exist (expected an existing file or folder)"
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "b.pth").write_bytes(b"other weights")
    recipe = load_recipe(path)
    assert recipe.teacher.checkpoints == {"alpha": str(tmp_path / "a.pth"), "beta": str(tmp_path / "gone" / "b.pth")}
    assert path_fields(recipe.teacher) == {
        "checkpoints.alpha": str(tmp_path / "a.pth"),
        "checkpoints.beta": str(tmp_path / "gone" / "b.pth"),
    }
    # Other weights in a teacher file are another teacher stage.
    before = stage_key(stage_material(TEACHER_STAGE, recipe, {}))
    (tmp_path / "gone" / "b.pth").write_bytes(b"retrained weights")
    assert stage_key(stage_material(TEACHER_STAGE, recipe, {})) != before


# ------------------------------------------------------------------------------------- the adaptor and student


def mst_context(tmp_path: Path, **kw: Any) -> MethodContext:
    world = ProceduralFaceWorld()
    where = SourceContext(world=world, batch_size=4, seed=0, split="distill", labelled=True, identities_per_group=2)
    method = kw.pop("method")
    train = TrainConfig(steps=6, batch_size=4, optimizer="sgd", lr=0.05, checkpoint_every=100, tensorboard=False)
    torch.manual_seed(3)
    teachers = toy_teachers()
    return MethodContext(
        teacher=teachers[0],
        student=TinyFaceNet(),
        seed=0,
        work_dir=tmp_path,
        num_classes=8,
        teachers=tuple(teachers),
        teacher_names=tuple(f"teacher_{g}" for g in world.group_names),
        train=train,
        open_source=lambda: open_source(method, ProceduralSourceConfig(), where),
        **kw,
    )


def test_the_adaptor_is_trained_then_frozen_through_student_training(tmp_path: Path) -> None:
    method = MSTKD(adaptor="dldp", adaptor_steps=4, identities_per_group=2, scale=16.0)
    ctx = mst_context(tmp_path, method=method)
    task = method.build(ctx)
    assert (tmp_path / ADAPTOR_FILE).is_file() and not (tmp_path / RESUME_FILE).exists()
    report = task.report()["adaptor"]
    assert report["steps"] == 4 and not report["reused"] and task.report()["teachers"] == list(ctx.teacher_names)
    frozen = {k: v.clone() for k, v in task.adaptor.state_dict().items()}
    assert not task.adaptor.training and not any(p.requires_grad for p in task.adaptor.parameters())
    # Not in the optimiser: the loop optimises the student's parameters and the task's (the EAF-KD head) only.
    trained = {id(p) for p in task.parameters()}
    assert trained == {id(p) for p in task.head.parameters()}
    assert not trained & {id(p) for p in task.adaptor.parameters()}
    head_before = task.head.weight.detach().clone()
    pixels = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8)
    target = task.target(pixels)
    fit(ctx.student, task, ctx.open_source(), ctx.train, tmp_path / "student", progress=False)
    assert all(torch.equal(frozen[k], v) for k, v in task.adaptor.state_dict().items())
    assert torch.equal(task.target(pixels), target)  # DLDP's dropout stays off: the target never moves
    assert not torch.equal(task.head.weight, head_before)  # the EAF-KD head did learn


def test_a_trained_adaptor_is_read_back_not_trained_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    method = MSTKD(adaptor="sl", loss="a_kd", adaptor_steps=3, identities_per_group=2, scale=16.0)
    first = method.build(mst_context(tmp_path, method=method))
    assert first.head is None and first.trainable == ()  # a-KD: no head, nothing of the task is trained
    after = torch.get_rng_state()

    def no_training(*args: Any, **kw: Any) -> None:
        raise AssertionError("the adaptor was trained again")

    monkeypatch.setattr("factory.distill.methods.mst_kd.fit", no_training)
    again = method.build(mst_context(tmp_path, method=method))
    assert again.report()["adaptor"]["reused"]
    assert again.report()["adaptor"]["history"] == first.report()["adaptor"]["history"]
    for key, value in first.adaptor.state_dict().items():
        assert torch.equal(value, again.adaptor.state_dict()[key]), key
    assert torch.equal(torch.get_rng_state(), after)  # the generators as they were after training it


def test_an_adaptor_of_other_teachers_is_refused(tmp_path: Path) -> None:
    method = MSTKD(adaptor="sl", adaptor_steps=2, identities_per_group=2, scale=16.0)
    ctx = mst_context(tmp_path, method=method)
    method.build(ctx)
    adaptor = create_adaptor("sl", 32, 8)
    reordered = ("teacher_beta", "teacher_alpha", "teacher_gamma", "teacher_delta")
    with pytest.raises(ValueError, match=r"over \['teacher_beta', 'teacher_alpha'.*in that order\); delete .*adaptor"):
        load_adaptor(tmp_path / ADAPTOR_FILE, adaptor, "sl", reordered)
    with pytest.raises(ValueError, match=r"holds a 'sl' adaptor .* needs 'dul'"):
        load_adaptor(tmp_path / ADAPTOR_FILE, create_adaptor("dul", 32, 8), "dul", ctx.teacher_names)
    with pytest.raises(ValueError, match="does not fit this adaptor"):
        load_adaptor(tmp_path / ADAPTOR_FILE, create_adaptor("sl", 32, 16), "sl", ctx.teacher_names)


def test_mst_kd_needs_several_teachers(tmp_path: Path) -> None:
    method = MSTKD()
    ctx = mst_context(tmp_path, method=method)
    one = MethodContext(teacher=ctx.teacher, student=ctx.student, seed=0, num_classes=8, teachers=ctx.teachers[:1])
    with pytest.raises(ValueError, match="several teachers and got 1: set teacher.specialists"):
        method.build(one)


# ----------------------------------------------------------------------------------------- resume after SIGKILL


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The toy MST-KD distill stage run once without interruption."""
    work = tmp_path_factory.mktemp("whole")
    subprocess.run(toy_command(work, 0.0, work / "out.pt"), check=True, timeout=300, env=toy_env())
    return {**torch.load(work / "out.pt", weights_only=True), "adaptor": sha256(work / "stage" / ADAPTOR_FILE)}


def toy_env() -> dict[str, str]:
    # This checkout's factory, not whichever one the interpreter has installed (a git worktree shares the venv).
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def toy_command(work: Path, delay: float, out: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).parent / "mst_toys.py"), str(work), str(delay), str(out)]


# When to kill: mid-adaptor (its checkpoint, no adaptor.pt yet); after adaptor.pt before the student's first
# checkpoint (the student starts from the generators saved with the adaptor); mid-student (its checkpoint).
KILL_WHEN = {
    "adaptor": lambda stage: (stage / RESUME_FILE).exists() and not (stage / ADAPTOR_FILE).exists(),
    "between": lambda stage: (stage / ADAPTOR_FILE).exists() and not (stage / RESUME_FILE).exists(),
    "student": lambda stage: (stage / ADAPTOR_FILE).exists() and (stage / RESUME_FILE).exists(),
}


@pytest.mark.parametrize("phase", list(KILL_WHEN))
def test_a_killed_mst_kd_stage_resumes_bit_identically(phase: str, whole_run: dict[str, Any], tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    proc = subprocess.Popen(toy_command(tmp_path, 0.1, tmp_path / "never.pt"), env=toy_env())
    deadline = time.monotonic() + 240
    while not KILL_WHEN[phase](stage):
        assert proc.poll() is None, f"the run ended before the {phase} phase could be interrupted"
        assert time.monotonic() < deadline, f"the run never reached the {phase} phase"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "never.pt").exists() and not (stage / "student.pt").exists()
    adaptor_before = (stage / ADAPTOR_FILE).stat().st_mtime_ns if phase != "adaptor" else None
    subprocess.run(toy_command(tmp_path, 0.0, tmp_path / "out.pt"), check=True, timeout=300, env=toy_env())
    resumed = torch.load(tmp_path / "out.pt", weights_only=True)
    adaptor = resumed["metrics"]["adaptor"]
    if phase == "adaptor":
        assert not adaptor["reused"] and adaptor["resumed_from"] >= 5
    else:  # read back, never trained again
        assert adaptor["reused"] and (stage / ADAPTOR_FILE).stat().st_mtime_ns == adaptor_before
    # The student resumes from its checkpoint, or starts at step 0 where it had none.
    assert (resumed["metrics"]["resumed_from"] >= 5) == (phase == "student")
    assert sha256(stage / ADAPTOR_FILE) == whole_run["adaptor"]
    for key, value in whole_run["student"]["state_dict"].items():
        assert torch.equal(value, resumed["student"]["state_dict"][key]), key
    order = ["teacher_alpha", "teacher_beta", "teacher_gamma", "teacher_delta"]
    assert resumed["student"]["extra"]["teachers"] == resumed["metrics"]["teachers"] == order
    assert resumed["artifacts"][0]["derived_from"] == "teacher_alpha"


# --------------------------------------------------------------------------------------------- factory check


def check(tmp_path: Path, text: str, *overrides: str) -> list[str]:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    try:
        load_recipe(path, list(overrides))
    except RecipeError as e:
        return [str(i) for i in e.issues]
    return []


MST = "distill:\n  source: {kind: procedural}\n  method: {kind: mst_kd}\n"


def test_the_shipped_recipe_is_per_group_sl_eaf_kd() -> None:
    recipe = load_recipe(MST_RECIPE)
    assert recipe.teacher.specialists == "per_group" and DISTILL_METHODS.get("mst_kd") is MSTKD
    method = recipe.distill.method
    assert (method.adaptor, method.loss, method.lambda_kd, method.head, method.scale) == (
        "sl",
        "eaf_kd",
        10000.0,
        "elastic_arcface",
        64.0,
    )
    train = recipe.distill.train
    assert (train.optimizer, train.momentum, train.weight_decay, train.batch_size, train.grad_clip_norm) == (
        "sgd",
        0.9,
        0.0005,
        128,
        5.0,
    )


def test_check_refuses_mst_kd_with_one_teacher(tmp_path: Path) -> None:
    assert check(tmp_path, MST) == [
        f"{tmp_path / 'r.yaml'}:3: distill.method: mst_kd distils several specialised teachers, and "
        "teacher.specialists is 'none' (one teacher): set teacher.specialists to per_group (one teacher per group) "
        "or balanced, or adopt pre-trained ones with teacher.checkpoints"
    ]
    assert check(tmp_path, "teacher:\n  specialists: per_group\n" + MST) == []
    assert check(tmp_path, "teacher:\n  specialists: balanced\n  count: 2\n" + MST) == []


def test_check_refuses_one_group_and_too_few_identities(tmp_path: Path) -> None:
    import yaml

    from factory.data.world.taxonomy import DEFAULT_TAXONOMY

    built_in = yaml.safe_load(DEFAULT_TAXONOMY.read_text())
    taxonomy = tmp_path / "one.yaml"
    taxonomy.write_text(yaml.safe_dump({**built_in, "groups": built_in["groups"][:1]}))
    world = f"data:\n  world: {{taxonomy: {taxonomy}}}\n"
    issues = check(tmp_path, world + "teacher:\n  specialists: per_group\n" + MST)
    assert issues == [
        f"{tmp_path / 'r.yaml'}:7: distill.method: mst_kd distils several teachers, and teacher.specialists "
        "'per_group' trains one here (the world has one group): use balanced with teacher.count >= 2"
    ]
    issues = check(tmp_path, "teacher:\n  specialists: balanced\n  identities_per_group: 3\n" + MST)
    assert issues == [
        f"{tmp_path / 'r.yaml'}:3: teacher.identities_per_group: got 3 for 4 balanced teachers, one per group "
        "(expected at least one identity of every group per teacher)"
    ]


def test_check_refuses_what_several_teachers_cannot_be(tmp_path: Path) -> None:
    issues = check(
        tmp_path,
        "teacher:\n  specialists: per_group\n  count: 3\n  source: {kind: procedural_set}\n  checkpoint: r.yaml\n",
    )
    where = f"{tmp_path / 'r.yaml'}"
    assert issues == [
        f"{where}:2: teacher.specialists: 'per_group' trains several teachers, and teacher.checkpoint adopts one "
        "(expected specialists: none with a checkpoint, or no checkpoint)",
        f"{where}:2: teacher.specialists: 'per_group' deals identities to teachers by group, which only the "
        "procedural source and labelled files with groups know; teacher.source is 'procedural_set' (expected "
        "{kind: procedural}, {kind: files, path: ...} with groups, or specialists: none)",
        f"{where}:3: teacher.count: got 3 with specialists 'per_group' (expected null, or 'balanced')",
    ]
    # Files are dealt by group when read: their identities are not the recipe's to count.
    files = "teacher:\n  specialists: balanced\n  count: 5\n  source: {kind: files, path: r.yaml"
    assert check(tmp_path, files + "}\n") == []
    assert check(tmp_path, files + ", group_mapping: r.yaml}\n") == []
    assert check(tmp_path, "teacher:\n  source: {kind: files, path: r.yaml, group_mapping: r.yaml}\n") == [
        f"{where}:2: teacher.source.group_mapping: gives the files' identities groups for teacher.specialists, and "
        "one teacher is trained on all of them (expected no group_mapping, or specialists: per_group or balanced)"
    ]
    issues = check(tmp_path, "teacher:\n  specialists: balanced\n  count: 5\n  identities_per_group: 4\n")
    assert issues == [
        f"{where}:3: teacher.count: got 5 balanced teachers for identities_per_group 4 (expected at most one "
        "teacher per identity of a group: each needs identities of every group)"
    ]


def test_check_sizes_the_adaptor_from_the_student_and_keeps_refusing_direct_comparisons(tmp_path: Path) -> None:
    from factory.models.catalog import register_model
    from factory.models.zoo import MODELS
    from factory.runtime.contract import ModelContract

    if "toy_embed128" not in MODELS.names():
        register_model("toy_embed128", ModelContract(embedding_dim=128))(lambda **kw: TinyFaceNet())
    several = "teacher:\n  specialists: per_group\n"
    # The adaptor maps 4 x 512 to the student's 128: nothing to refuse.
    assert check(tmp_path, several + MST, "distill.student=toy_embed128") == []
    # A method comparing embeddings directly still needs equal sizes, whatever the number of teachers.
    assert check(tmp_path, several + "distill:\n  student: toy_embed128\n  method: {kind: feature_kd}\n") == [
        f"{tmp_path / 'r.yaml'}:4: distill.student: 'toy_embed128' embeds in 128 dimensions, the teacher "
        "'iresnet_nano' in 512 (expected equal sizes for distill.method feature_kd, or a method with an adaptor)"
    ]
    issues = check(tmp_path, several + MST, "distill.method.adaptor=dlpd", "distill.method.loss=kd")
    assert issues == [
        "--set distill.method.adaptor=dlpd: distill.method.adaptor: unknown adaptor 'dlpd': did you mean 'dldp', "
        "'dul'? (known: dldp, dul, sl)",
        "--set distill.method.loss=kd: distill.method.loss: got 'kd' (expected 'a_kd' or 'eaf_kd')",
    ]
