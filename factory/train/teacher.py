"""The teacher stage: train a face-recognition teacher on labelled procedural faces, or adopt a checkpoint.

The built-in world has no pre-trained teacher anywhere, so the build makes one: identity classification with a
margin head on a fixed set of procedural identities (disjoint from the benchmark and calibration identities).
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import torch

from factory.data.build import make_world
from factory.data.procedural import identity_set, labelled_batch
from factory.files import sha256_file
from factory.models.checkpoint import load_model, save_model
from factory.models.heads import create_head
from factory.models.zoo import count_params, create_model
from factory.train.loop import clear_resume, fit
from factory.train.tasks import MarginClassificationTask

if TYPE_CHECKING:
    from factory.pipeline import StageContext

TEACHER_FILE = "teacher.pt"
TEACHER_SPLIT = "teacher"


def train_teacher(ctx: StageContext) -> dict[str, Any]:
    """Write ``teacher.pt`` (a factory checkpoint) and return training metrics."""
    recipe, cfg = ctx.recipe, ctx.recipe.teacher
    out = ctx.work_dir / TEACHER_FILE
    if cfg.checkpoint:
        model = load_model(cfg.checkpoint)  # strict, weights_only: refuses anything that is not a checkpoint
        shutil.copyfile(cfg.checkpoint, out)
        return {"source": cfg.checkpoint, "sha256": sha256_file(out), "model": model.model_name}

    torch.manual_seed(recipe.seed)
    world = make_world(recipe.data.world)
    ids = identity_set(world, TEACHER_SPLIT, per_group=cfg.identities_per_group, seed=recipe.seed)
    model = create_model(cfg.model)
    head = create_head(cfg.head, model.contract.embedding_dim, len(ids.keys), scale=cfg.scale, margin=cfg.margin)
    batch_size = cfg.train.batch_size

    def batches(step: int) -> dict[str, Any]:
        pixels, labels, groups = labelled_batch(world, ids, batch_size, step, recipe.seed)
        return {"pixels": pixels, "labels": labels, "groups": groups}

    result = fit(model, MarginClassificationTask(head), batches, cfg.train, ctx.work_dir, "teacher", ctx.progress)
    save_model(out, model, extra={"identities": len(ids.keys), "split": TEACHER_SPLIT, "steps": result.steps})
    clear_resume(ctx.work_dir)
    return {
        "model": cfg.model,
        "params": count_params(model),
        "identities": len(ids.keys),
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "images_per_second": result.images_per_second,
        "final": result.final_terms,
        "history": result.history,
    }
