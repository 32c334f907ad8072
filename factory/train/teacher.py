"""The teacher stage: train a face-recognition teacher on labelled procedural faces, or adopt a checkpoint.

The built-in world has no pre-trained teacher anywhere, so the build makes one: identity classification with a
margin head on a fixed set of procedural identities (disjoint from the benchmark and calibration identities).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from factory.data.build import make_world
from factory.data.procedural import identity_set, labelled_batch
from factory.data.sources import file_batch, identity_count, open_labelled
from factory.files import atomic_path, read_json, sha256_file, write_json
from factory.models.checkpoint import load_model, save_model
from factory.models.contract import ModelContract
from factory.models.heads import create_head
from factory.models.loading import load_any_model
from factory.models.zoo import count_params, create_model
from factory.train.loop import clear_resume, fit
from factory.train.tasks import MarginClassificationTask

if TYPE_CHECKING:
    from factory.pipeline import StageContext, StageOutput

TEACHER_FILE = "teacher.pt"
BLACK_BOX_FILE = "teacher_black_box.json"  # names the black-box file and the contract it was declared with
TEACHER_SPLIT = "teacher"


def train_teacher(ctx: StageContext) -> dict[str, Any]:
    """Write ``teacher.pt`` (a factory checkpoint) and return training metrics."""
    recipe, cfg = ctx.recipe, ctx.recipe.teacher
    out = ctx.work_dir / TEACHER_FILE
    if cfg.checkpoint:
        return adopt_teacher(ctx, Path(cfg.checkpoint))

    torch.manual_seed(recipe.seed)
    model = create_model(cfg.model)
    batch_size = cfg.train.batch_size
    if cfg.train_data:
        dataset = open_labelled(cfg.train_data, size=model.contract.input_size[0])
        classes = identity_count(dataset)

        def batches(step: int) -> dict[str, Any]:
            items = file_batch(dataset, batch_size, step, recipe.seed)
            return {"pixels": torch.stack([i[0] for i in items]), "labels": torch.tensor([i[1] for i in items])}

    else:
        world = make_world(recipe.data.world)
        ids = identity_set(world, TEACHER_SPLIT, per_group=cfg.identities_per_group, seed=recipe.seed)
        classes = len(ids.keys)

        def batches(step: int) -> dict[str, Any]:
            pixels, labels, groups = labelled_batch(world, ids, batch_size, step, recipe.seed)
            return {"pixels": pixels, "labels": labels, "groups": groups}

    head = create_head(cfg.head, model.contract.embedding_dim, classes, scale=cfg.scale, margin=cfg.margin)

    result = fit(model, MarginClassificationTask(head), batches, cfg.train, ctx.work_dir, "teacher", ctx.progress)
    source = cfg.train_data or f"procedural:{TEACHER_SPLIT}"
    save_model(out, model, extra={"identities": classes, "data": source, "steps": result.steps})
    clear_resume(ctx.work_dir)
    return {
        "model": cfg.model,
        "params": count_params(model),
        "identities": classes,
        "data": source,
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "images_per_second": result.images_per_second,
        "final": result.final_terms,
        "history": result.history,
    }


def adopt_teacher(ctx: StageContext, source: Path) -> dict[str, Any]:
    """Take the recipe's teacher file instead of training one; its provenance (path, sha256) goes in the metrics.

    Weights of a zoo architecture become a factory checkpoint (strictly loaded, so a mismatch fails here, not
    mid-distillation); a black-box file is copied as it is, with its declared contract beside it.
    """
    cfg = ctx.recipe.teacher
    model = load_any_model(source, model=cfg.model, normalization=cfg.normalization)
    provenance = {"source": str(source), "sha256": sha256_file(source), "model": model.model_name}
    if hasattr(model, "model_overrides"):
        save_model(ctx.work_dir / TEACHER_FILE, model, extra=provenance)
        return {**provenance, "params": count_params(model), "contract": model.contract.to_dict()}
    copies = [source] + ([source.with_suffix(".bin")] if source.suffix == ".xml" else [])
    for path in copies:
        with atomic_path(ctx.work_dir / f"teacher{path.suffix}") as tmp:
            shutil.copyfile(path, tmp)
    write_json(ctx.work_dir / BLACK_BOX_FILE, {"file": f"teacher{source.suffix}", "contract": model.contract.to_dict()})
    return {**provenance, "black_box": True, "contract": model.contract.to_dict()}


def load_teacher(output: StageOutput) -> nn.Module:
    """The teacher stage's model: a factory checkpoint, or the black-box file with its declared contract."""
    if (output.dir / TEACHER_FILE).exists():
        return load_model(output.path(TEACHER_FILE))
    spec = read_json(output.path(BLACK_BOX_FILE))
    return load_any_model(output.path(spec["file"]), contract=ModelContract.from_dict(spec["contract"]))
