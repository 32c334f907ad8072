"""The export stage: every format of ``export.formats`` from the distilled student, each checked against torch."""

from __future__ import annotations

import dataclasses
from typing import Any

from factory.export.exporters import ExportContext
from factory.export.parity import check_parity, fixed_inputs, require_parity
from factory.models.checkpoint import load_model
from factory.pipeline.stage import Stage, StageContext, StageResult
from factory.runtime.artifacts import open_runner
from factory.runtime.runners import torch_runner

STUDENT = "torch_fp32"


def export_student(ctx: StageContext) -> StageResult:
    """Run the exporters in order; fail if any artifact drifts from torch beyond ``export.min_parity_cosine``."""
    cfg, threads = ctx.config["export"], ctx.config["threads"]
    model = load_model(ctx.artifact(STUDENT).path).eval()
    made = ExportContext(model=model, work_dir=ctx.work_dir, made={}, source=STUDENT)
    for exporter in cfg.formats:
        artifact = exporter.export(made)
        made.made[artifact.name] = artifact
    inputs = fixed_inputs(model.contract)
    reference = torch_runner(model, threads=threads)
    artifacts = []
    for artifact in made.made.values():
        result = check_parity(reference, open_runner(artifact, ctx.work_dir, threads=threads), inputs)
        require_parity(result, cfg.min_parity_cosine, f"{artifact.name} vs torch")
        artifacts.append(dataclasses.replace(artifact, parity={"against": STUDENT, **result.to_dict()}))
    return StageResult({"parity": {a.name: a.parity for a in artifacts}}, artifacts)


def _summary(m: dict[str, Any]) -> str:
    return ", ".join(f"{k} cosine {v['min_cosine']:.6f}" for k, v in m["parity"].items())


STAGE = Stage(
    name="export",
    needs=("distill",),
    config=lambda r: {"export": r.export, "threads": r.threads},
    run=export_student,
    summary=_summary,
)
