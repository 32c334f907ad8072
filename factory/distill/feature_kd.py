"""The distill stage: label-free feature distillation of the student on online procedural faces (SynthDistill).

Every step renders fresh identities (no label, no fixed dataset): the teacher's embedding of each image is the
target. Batches are a function of the step, so an interrupted stage resumes exactly where it stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from factory.data.build import make_world
from factory.data.procedural import unlabelled_batch
from factory.data.sources import UnlabelledImages, file_batch
from factory.distill.tasks import FeatureDistillTask
from factory.models.checkpoint import save_model
from factory.models.zoo import count_params, create_model
from factory.train.loop import clear_resume, fit
from factory.train.teacher import load_teacher

if TYPE_CHECKING:
    from factory.pipeline import StageContext

STUDENT_FILE = "student.pt"
DISTILL_SPLIT = "distill"


def distill_student(ctx: StageContext) -> dict[str, Any]:
    """Write ``student.pt`` (a factory checkpoint) and return training metrics."""
    recipe, cfg = ctx.recipe, ctx.recipe.distill
    torch.manual_seed(recipe.seed)
    world = make_world(recipe.data.world)
    teacher = load_teacher(ctx.inputs["teacher"])
    student = create_model(cfg.student)
    batch_size = cfg.train.batch_size

    if cfg.data:
        images = UnlabelledImages(cfg.data, size=student.contract.input_size[0])

        def batches(step: int) -> dict[str, Any]:
            return {"pixels": torch.stack(file_batch(images, batch_size, step, recipe.seed))}

    else:

        def batches(step: int) -> dict[str, Any]:
            batch = unlabelled_batch(world, batch_size, step, recipe.seed, split=DISTILL_SPLIT)
            return {"pixels": batch["images"], "groups": batch["group"]}

    task = FeatureDistillTask(teacher, normalize=cfg.normalize)
    result = fit(student, task, batches, cfg.train, ctx.work_dir, "distill", ctx.progress)
    save_model(ctx.work_dir / STUDENT_FILE, student, extra={"teacher": teacher.model_name, "steps": result.steps})
    clear_resume(ctx.work_dir)
    return {
        "student": cfg.student,
        "teacher": teacher.model_name,
        "params": count_params(student),
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "images_per_second": result.images_per_second,
        "final": result.final_terms,
        "history": result.history,
    }
