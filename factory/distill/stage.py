"""The distill stage: label-free feature distillation of the student from the teacher (SynthDistill's feature KD).

By default every step renders fresh procedural identities (no label, no fixed dataset) and the teacher's embedding
of each image is the target; ``distill.source`` swaps in files, a StyleGAN generator or a mix. Batches are a
function of the step, so an interrupted stage resumes exactly where it stopped.
"""

from __future__ import annotations

from typing import Any

import torch

from factory.data.sources import SourceContext
from factory.data.world.renderer import make_world
from factory.distill.methods import MethodContext
from factory.models.checkpoint import save_model
from factory.models.external import load_teacher
from factory.models.zoo import count_params, create_model
from factory.pipeline.stage import Stage, StageContext, StageResult
from factory.runtime.artifacts import Artifact
from factory.train.loop import clear_resume, fit

STUDENT_FILE = "student.pt"
DISTILL_SPLIT = "distill"


def distill_student(ctx: StageContext) -> StageResult:
    """Write ``student.pt`` (a factory checkpoint) and return training metrics."""
    cfg, seed = ctx.config["distill"], ctx.config["seed"]
    torch.manual_seed(seed)
    world = make_world(ctx.config["world"])
    teacher = load_teacher(ctx.artifact("teacher"))  # before the student: both draw their initial weights
    student = create_model(cfg.student)
    where = SourceContext(
        world=world,
        batch_size=cfg.train.batch_size,
        seed=seed,
        split=DISTILL_SPLIT,
        labelled=False,
        size=student.contract.input_size[0],
    )
    task = cfg.method.build(MethodContext(teacher=teacher, student=student, seed=seed, work_dir=ctx.work_dir))
    result = fit(student, task, cfg.source.open(where), cfg.train, ctx.work_dir, "distill", ctx.progress)
    save_model(ctx.work_dir / STUDENT_FILE, student, extra={"teacher": teacher.model_name, "steps": result.steps})
    clear_resume(ctx.work_dir)
    metrics = {
        "student": cfg.student,
        "teacher": teacher.model_name,
        "data": cfg.source.describe(where),
        "method": cfg.method.describe(),
        "params": count_params(student),
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "images_per_second": result.images_per_second,
        "final": result.final_terms,
        "history": result.history,
    }
    return StageResult(metrics, [Artifact("torch_fp32", (STUDENT_FILE,), "torch", derived_from="teacher")])


def _summary(m: dict[str, Any]) -> str:
    return (
        f"{m['student']} ({m['params'] / 1e6:.2f} M params) from {m['teacher']}, {m['steps']} steps, "
        f"teacher cosine {m['final'].get('cos', float('nan')):.3f}, {m['images_per_second']:.0f} img/s"
    )


STAGE = Stage(
    name="distill",
    needs=("teacher",),
    config=lambda r: {"distill": r.distill, "world": r.data.world, "seed": r.seed},
    run=distill_student,
    summary=_summary,
)
