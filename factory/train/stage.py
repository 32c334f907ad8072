"""The teacher stage: train a face-recognition teacher with a margin head, or adopt the recipe's checkpoint.

The built-in world has no pre-trained teacher anywhere, so the build makes one: identity classification on a fixed
set of procedural identities (disjoint from the benchmark and calibration identities), or on the user's labelled
files (``teacher.source``).

With ``teacher.specialists`` it trains several teachers instead (MST-KD), one after the other, each on its part of
the identities (:mod:`factory.train.specialists`) and each an artifact of its own, in the order the plan gives: the
order MST-KD concatenates their embeddings in, recorded as the metrics' ``teachers``. Every teacher is a reference
artifact (measured beside the student, never gated or shipped); the first is the one a single-teacher method
distils from and the student is compared with. ``teacher.checkpoints`` adopts several pre-trained teachers instead
(specialists trained elsewhere, e.g. on BUPT-Balancedface): the same artifacts, in the mapping's order.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from factory.data.sources import SourceContext
from factory.data.world.renderer import make_world
from factory.files import atomic_path, sha256_file
from factory.models.checkpoint import read_checkpoint, save_model
from factory.models.external import load_any_model
from factory.models.heads import create_head
from factory.models.zoo import count_params, create_model
from factory.pipeline.stage import Stage, StageContext, StageResult
from factory.runtime.artifacts import Artifact
from factory.train.distributed import current_world, processes_note
from factory.train.loop import clear_resume, fit
from factory.train.specialists import TeacherPlan, teacher_plans
from factory.train.tasks import TASKS

TEACHER_FILE = "teacher.pt"
TEACHER_SPLIT = "teacher"


def train_teacher(ctx: StageContext) -> StageResult:
    """Write ``teacher.pt`` (a factory checkpoint) and return training metrics."""
    cfg, seed = ctx.config["teacher"], ctx.config["seed"]
    if cfg.checkpoint:
        return adopt_teacher(ctx, Path(cfg.checkpoint))
    if cfg.checkpoints:
        return adopt_teachers(ctx)
    if cfg.specialists != "none":
        return train_teachers(ctx)
    torch.manual_seed(seed)
    model = create_model(cfg.model)
    where, source, task = _classification(cfg, model, make_world(ctx.config["world"]), seed)
    result = fit(model, task, source, cfg.train, ctx.work_dir, "teacher", ctx.progress)
    data = cfg.source.describe(where)
    if current_world().main:  # under DDP every rank holds the same weights; one writes them
        save_model(
            ctx.work_dir / TEACHER_FILE,
            model,
            extra={"identities": source.num_classes, "data": data, "steps": result.steps},
        )
        clear_resume(ctx.work_dir)
    metrics = {
        "model": cfg.model,
        "params": count_params(model),
        "identities": source.num_classes,
        "data": data,
        **result.metrics(),
    }
    return StageResult(metrics, [Artifact("teacher", (TEACHER_FILE,), "torch", reference=True)])


def train_teachers(ctx: StageContext) -> StageResult:
    """Train every teacher of ``teacher.specialists``, one after the other; write ``<name>.pt`` for each.

    A teacher whose checkpoint is already in the folder (a build interrupted after it) is not trained again: its
    record comes from the checkpoint, and only the interrupted teacher resumes.
    """
    cfg, seed = ctx.config["teacher"], ctx.config["seed"]
    world = make_world(ctx.config["world"])
    plans = teacher_plans(cfg, world.group_names, seed)
    teachers = {plan.name: _train_planned(ctx, world, plan) for plan in plans}
    first = teachers[plans[0].name]
    metrics = {
        "model": cfg.model,
        "params": first["params"],
        "specialists": cfg.specialists,
        "teachers": [plan.name for plan in plans],  # the order MST-KD concatenates their embeddings in
        "identities": sum(t["identities"] for t in teachers.values()),
        "steps": cfg.train.steps,  # each
        "per_teacher": teachers,
    }
    artifacts = [Artifact(plan.name, (plan.file,), "torch", reference=True) for plan in plans]
    return StageResult(metrics, artifacts)


def _classification(cfg: Any, model: Any, world: Any, seed: int, shard: Any = None) -> tuple[Any, Any, Any]:
    """A teacher's labelled source (all its identities, or one ``shard`` of them) and its margin-head task."""
    where = SourceContext(
        world=world,
        batch_size=cfg.train.batch_size,
        seed=seed,
        split=TEACHER_SPLIT,
        labelled=True,
        size=model.contract.input_size[0],
        identities_per_group=cfg.identities_per_group,
        shard=shard,
    )
    source = cfg.source.open(where)
    head = create_head(
        cfg.head,
        model.contract.embedding_dim,
        source.num_classes,
        scale=cfg.scale,
        margin=cfg.margin,
        margin_std=cfg.margin_std,  # None (the head's default) for every head; check refuses it on a plain one
    )
    return where, source, TASKS.get("margin_classification")(head)


def _train_planned(ctx: StageContext, world: Any, plan: TeacherPlan) -> dict[str, Any]:
    """Train one planned teacher (or read back the one already trained) and return its record."""
    cfg = ctx.config["teacher"]
    path = ctx.work_dir / plan.file
    if path.is_file():
        return {**read_checkpoint(path)["extra"], "reused": True}
    torch.manual_seed(plan.seed)
    model = create_model(cfg.model)
    where, source, task = _classification(cfg, model, world, ctx.config["seed"], plan.shard)
    result = fit(model, task, source, cfg.train, ctx.work_dir, plan.name, ctx.progress)
    groups = sorted({world.group_names[int(g)] for g in source.ids.group}, key=world.group_names.index)
    # Only what the run determines goes into the checkpoint (no timings): a teacher read back after an interruption
    # reports what its run did.
    record = {
        "params": count_params(model),
        "identities": source.num_classes,
        "groups": groups,
        "seed": plan.seed,
        "data": cfg.source.describe(where),
        "steps": result.steps,
        "final": result.final_terms,
        "history": result.history,
    }
    # The resume checkpoint goes first: killed between the two, the teacher trains again from step 0 (the same
    # run, seeded), where the other order would let the next teacher resume from this one's checkpoint.
    clear_resume(ctx.work_dir)
    save_model(path, model, extra=record)
    return {**record, "resumed_from": result.resumed_from, "images_per_second": result.images_per_second}


def adopt_teacher(ctx: StageContext, source: Path, name: str = "teacher") -> StageResult:
    """Take the recipe's teacher file instead of training one; its provenance (path, sha256) goes in the metrics.

    Weights of a zoo architecture become a factory checkpoint (strictly loaded, so a mismatch fails here, not
    mid-distillation); a black-box file is copied as it is, its declared contract recorded in the artifact. The
    artifact and its files are called ``name`` (``teacher``, or ``teacher_<name>`` of ``teacher.checkpoints``).
    """
    cfg = ctx.config["teacher"]
    model = load_any_model(source, model=cfg.model, normalization=cfg.normalization)
    provenance = {"source": str(source), "sha256": sha256_file(source), "model": model.model_name}
    if hasattr(model, "model_overrides"):
        save_model(ctx.work_dir / f"{name}.pt", model, extra=provenance)
        metrics = {**provenance, "params": count_params(model), "contract": model.contract.to_dict()}
        return StageResult(metrics, [Artifact(name, (f"{name}.pt",), "torch", reference=True)])
    copies = [source] + ([source.with_suffix(".bin")] if source.suffix == ".xml" else [])
    for path in copies:
        with atomic_path(ctx.work_dir / f"{name}{path.suffix}") as tmp:
            shutil.copyfile(path, tmp)
    contract = model.contract.to_dict()
    files = tuple(f"{name}{p.suffix}" for p in copies)
    artifact = Artifact(name, files, "torch", reference=True, contract=contract)
    return StageResult({**provenance, "black_box": True, "contract": contract}, [artifact])


def adopt_teachers(ctx: StageContext) -> StageResult:
    """Adopt every file of ``teacher.checkpoints`` as ``teacher_<name>``, in the mapping's order.

    The artifacts and the recorded order are those of trained specialists, so MST-KD takes either; each teacher's
    provenance (path, sha256) is in the metrics' ``per_teacher``.
    """
    cfg = ctx.config["teacher"]
    adopted = {
        f"teacher_{key}": adopt_teacher(ctx, Path(path), f"teacher_{key}") for key, path in cfg.checkpoints.items()
    }
    first = next(iter(adopted.values())).metrics
    metrics = {
        "model": first["model"],
        "params": first.get("params"),
        "specialists": "adopted",
        "teachers": list(adopted),  # the order MST-KD concatenates their embeddings in: the mapping's
        "per_teacher": {name: made.metrics for name, made in adopted.items()},
    }
    return StageResult(metrics, [made.artifacts[0] for made in adopted.values()])


def _summary(m: dict[str, Any]) -> str:
    if "source" in m:
        return f"{m['model']}: checkpoint {m['source']}"
    if m.get("specialists") == "adopted":
        return f"{len(m['teachers'])} x {m['model']} adopted ({', '.join(m['teachers'])}) from checkpoints"
    if "teachers" in m:
        accs = [t["final"].get("acc", float("nan")) for t in m["per_teacher"].values()]
        return (
            f"{len(m['teachers'])} x {m['model']} ({m['specialists']}: {', '.join(m['teachers'])}), {m['steps']} "
            f"steps each, {m['identities']} identities in all, train acc {min(accs):.3f}-{max(accs):.3f}"
        )
    return (
        f"{m['model']} ({m['params'] / 1e6:.2f} M params), {m['steps']} steps on {m['identities']} identities, "
        f"train acc {m['final'].get('acc', float('nan')):.3f}, {m['images_per_second']:.0f} img/s"
        + processes_note(m.get("world_size", 1))
    )


STAGE = Stage(
    name="teacher",
    needs=(),
    config=lambda r: {"teacher": r.teacher, "world": r.data.world, "seed": r.seed},
    run=train_teacher,
    # An adopted teacher is not trained.
    training=lambda c: None if c["teacher"].checkpoint or c["teacher"].checkpoints else c["teacher"].train,
    summary=_summary,
)
