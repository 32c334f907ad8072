"""The distill stage: label-free feature distillation of the student from the teacher (SynthDistill's feature KD).

By default every step renders fresh procedural identities (no label, no fixed dataset) and the teacher's embedding
of each image is the target; ``distill.source`` swaps in files, a procedural set, a StyleGAN generator, a mix or real
and synthetic faces per group. Batches are a function of the step, so an interrupted stage resumes exactly where it
stopped. Static data is embedded by the teacher once per image and flip (:mod:`factory.distill.teacher_cache`,
``distill.teacher_cache_mb``); the metrics say how, and what a real/synthetic mix drew in every group.

A method that trains on identity labels (``labelled = True``: the margin baseline) gets its source opened labelled,
with identities of the distill split (never the benchmark's) and their count in its context.

With several teachers (``teacher.specialists``) a method that distils them all (``multi_teacher = True``: MST-KD)
gets every one, in the teacher stage's recorded order, and the order is recorded in the metrics and the student's
checkpoint; any other method distils from the first. The student derives from the first teacher either way: it is
the teacher validation pairs the student with, while every teacher is measured beside it.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from factory.data.sources import Source, SourceContext
from factory.data.world.renderer import make_world
from factory.distill.methods import MethodContext
from factory.models.checkpoint import save_model
from factory.models.external import load_teacher
from factory.models.zoo import count_params, create_model
from factory.pipeline.stage import Stage, StageContext, StageResult
from factory.runtime.artifacts import Artifact
from factory.train.distributed import current_world, processes_note
from factory.train.loop import clear_resume, fit

STUDENT_FILE = "student.pt"
DISTILL_SPLIT = "distill"


def distill_student(ctx: StageContext) -> StageResult:
    """Write ``student.pt`` (a factory checkpoint) and return training metrics."""
    cfg, seed = ctx.config["distill"], ctx.config["seed"]
    torch.manual_seed(seed)
    world = make_world(ctx.config["world"])
    built = ctx.inputs["teacher"].built()  # in the teacher stage's order: MST-KD concatenates in it
    multi = getattr(cfg.method, "multi_teacher", False)
    used = built if multi else built[:1]
    teachers = [load_teacher(b) for b in used]  # before the student: both draw their initial weights
    teacher = teachers[0]
    student = create_model(cfg.student)
    labelled = getattr(cfg.method, "labelled", False)
    where = SourceContext(
        world=world,
        batch_size=cfg.train.batch_size,
        seed=seed,
        split=DISTILL_SPLIT,
        labelled=labelled,
        size=student.contract.input_size[0],
        identities_per_group=getattr(cfg.method, "identities_per_group", 100),
    )
    source = open_source(cfg.method, cfg.source, where)
    method_ctx = MethodContext(
        teacher=teacher,
        student=student,
        seed=seed,
        work_dir=ctx.work_dir,
        num_classes=getattr(source, "num_classes", None),
        teacher_cache_mb=cfg.teacher_cache_mb,
        teachers=tuple(teachers) if multi else (),
        teacher_names=tuple(b.name for b in used) if multi else (),
        train=cfg.train,
        # A source of its own for what the method trains first: the student's starts untouched by it.
        open_source=functools.partial(open_source, cfg.method, cfg.source, where),
        progress=ctx.progress,
    )
    task = cfg.method.build(method_ctx)
    result = fit(student, task, source, cfg.train, ctx.work_dir, "distill", ctx.progress)
    if current_world().main:  # under DDP every rank holds the same weights; one writes them
        extra = {"teacher": teacher.model_name, "steps": result.steps}
        if multi:
            extra["teachers"] = [b.name for b in used]  # the order of the concatenation the student learnt from
        save_model(ctx.work_dir / STUDENT_FILE, student, extra=extra)
        clear_resume(ctx.work_dir)
    metrics = {
        "student": cfg.student,
        "teacher": teacher.model_name,
        "teachers": [b.name for b in used],
        "data": cfg.source.describe(where),
        "method": cfg.method.describe(),
        "params": count_params(student),
        **result.metrics(),
    }
    for part in (source, task):  # what they report of the run: a mix's composition, the teacher cache's counts,
        metrics.update(getattr(part, "report", dict)())  # what a method did before the student (MST-KD's adaptor)
    artifact = Artifact("torch_fp32", (STUDENT_FILE,), "torch", derived_from=used[0].name)
    return StageResult(metrics, [artifact])


def open_source(method: Any, source: Any, where: SourceContext) -> Source:
    """Open ``distill.source`` as ``distill.method`` needs it: labelled for a method that trains on identities.

    Raises:
        ValueError: naming both sections, when the method needs labels the source cannot give.
    """
    if not getattr(method, "labelled", False):
        return source.open(where)
    refusal = (
        f"distill.method {method.kind} trains on identity labels, and distill.source {source.kind} has none "
        "(use distill.source: {kind: procedural}, or labelled files)"
    )
    try:
        opened = source.open(where)
    except ValueError as e:
        raise ValueError(f"{refusal}: {e}") from e
    if getattr(opened, "num_classes", None) is None:
        raise ValueError(refusal)
    return opened


def _summary(m: dict[str, Any]) -> str:
    # A label-trained student (the margin baseline) reports accuracy, not agreement with the teacher.
    final = m["final"]
    fit_note = (
        f"train acc {final['acc']:.3f}" if "acc" in final else f"teacher cosine {final.get('cos', float('nan')):.3f}"
    )
    teachers = m.get("teachers") or []
    source = f"{len(teachers)} teachers" if len(teachers) > 1 else m["teacher"]
    origin = "from scratch on identity labels" if "acc" in final else f"from {source}"
    return (
        f"{m['student']} ({m['params'] / 1e6:.2f} M params) {origin}, {m['steps']} steps, "
        f"{fit_note}, {m['images_per_second']:.0f} img/s{processes_note(m.get('world_size', 1))}"
    )


STAGE = Stage(
    name="distill",
    needs=("teacher",),
    config=lambda r: {"distill": r.distill, "world": r.data.world, "seed": r.seed},
    run=distill_student,
    training=lambda c: c["distill"].train,
    summary=_summary,
)
