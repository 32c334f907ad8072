"""The real distill stage running MST-KD on four tiny teachers: what tests/test_mst_kd.py kills and resumes.

Run as a script (killed with SIGKILL mid-run, then run again on the same folder):
``python mst_toys.py WORK DELAY OUT``. ``WORK/teachers`` holds the teachers' checkpoints (written once, the same
bytes every time), ``WORK/stage`` is the distill stage's folder (its ``.partial`` in a build). The stage's metrics
and the student's weights go to ``OUT``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from distill_toys import TinyFaceNet

from factory.data.sources import LabelledWorldBatches, ProceduralSourceConfig
from factory.distill.methods.mst_kd import MSTKD
from factory.distill.stage import distill_student
from factory.models.catalog import register_model
from factory.models.checkpoint import read_checkpoint, save_model
from factory.models.zoo import MODELS, create_model
from factory.pipeline.stage import StageContext, StageOutput
from factory.recipe import DistillConfig, Recipe, TrainConfig, WorldConfig
from factory.runtime.artifacts import Artifact
from factory.runtime.contract import ModelContract

TOY = "toy_face"
GROUPS = ("alpha", "beta", "gamma", "delta")


def register_toy() -> None:
    """The tiny network as a zoo model, so that checkpoints of it load like any teacher's or student's."""
    if TOY not in MODELS.names():
        register_model(TOY, ModelContract(input_size=(112, 112), embedding_dim=8))(lambda **kw: TinyFaceNet())


def teacher_output(folder: Path) -> StageOutput:
    """Four toy teachers as a finished teacher stage would leave them (teacher_alpha first)."""
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for i, group in enumerate(GROUPS):
        name = f"teacher_{group}"
        if not (folder / f"{name}.pt").is_file():
            torch.manual_seed(100 + i)
            save_model(folder / f"{name}.pt", create_model(TOY))
        artifacts.append(Artifact(name, (f"{name}.pt",), "torch", reference=True))
    metrics = {"teachers": [a.name for a in artifacts]}
    return StageOutput("teacher", "toy", folder, {}, metrics, artifacts, True, 0.0)


def config(steps: int = 22, adaptor_steps: int = 12) -> DistillConfig:
    """DLDP (dropout in the adaptor) and EAF-KD (random margins): every random draw a resume must replay."""
    method = MSTKD(adaptor="dldp", loss="eaf_kd", adaptor_steps=adaptor_steps, identities_per_group=2, scale=16.0)
    train = TrainConfig(
        steps=steps,
        batch_size=4,
        optimizer="sgd",
        lr=0.05,
        checkpoint_every=5,
        grad_clip_norm=5.0,
        channels_last=False,
        tensorboard=False,
    )
    return DistillConfig(student=TOY, source=ProceduralSourceConfig(), method=method, train=train)


def run(work: Path, delay: float = 0.0) -> dict[str, Any]:
    """The distill stage over the toy teachers, every batch delayed by ``delay`` seconds."""
    register_toy()
    if delay:
        batch = LabelledWorldBatches.batch

        def slow(self: LabelledWorldBatches, step: int) -> dict[str, Any]:
            time.sleep(delay)
            return batch(self, step)

        LabelledWorldBatches.batch = slow  # type: ignore[method-assign]
    (work / "stage").mkdir(parents=True, exist_ok=True)
    ctx = StageContext(
        config={"distill": config(), "world": WorldConfig(), "seed": 0},
        work_dir=work / "stage",
        inputs={"teacher": teacher_output(work / "teachers")},
        recipe=Recipe(),
        progress=False,
    )
    made = distill_student(ctx)
    student = read_checkpoint(work / "stage" / "student.pt")
    return {"metrics": made.metrics, "artifacts": [a.to_dict() for a in made.artifacts], "student": student}


if __name__ == "__main__":
    work, delay, out = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
    torch.save(run(work, delay), out)
