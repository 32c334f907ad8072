"""MST-KD (Caldeira et al., seed 001): distillation from several specialised teachers through a learned adaptor.

Every teacher of the build (``teacher.specialists``: one per group, or the balanced baseline; or pre-trained ones
adopted from ``teacher.checkpoints``) embeds the image; the normalised embeddings are concatenated in the teacher
stage's recorded order (``teacher_alpha, teacher_beta, ...``: the world's group order, as the paper's fixed Asian,
African, Caucasian, Indian; or the order of ``teacher.checkpoints``) and an adaptor (:mod:`factory.distill.adaptors`)
projects them to the student's embedding size. Two phases:

1. The adaptor is trained with an ElasticArcFace head over every identity of the labelled distill data, the teachers
   frozen, through the one training loop (the adaptor is the loop's model, the head the task's parameters). It is
   then written to ``adaptor.pt`` in the stage's folder with torch's generators' state, and a resumed stage reads
   it back instead of training it again: the student's phase then starts exactly as it would have.
2. The adaptor is frozen (eval mode, no gradients, outside the optimiser) and the student learns its target
   ``t = normalise(adaptor(concat))``: a-KD is ``λ·MSE(t, normalise(student))``; EAF-KD adds an ElasticArcFace
   cross-entropy on the student's embedding over the same identities (λ = 10,000 in the paper).

The paper's settings: SGD momentum 0.9, weight decay 5e-4, batch 128, gradient norm clipped at 5 (``distill.train``);
adaptor and student trained for the same 26 epochs with ×0.1 at 8/14/20/25, the adaptor at lr 1, the student at 0.1.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from factory.distill.adaptors import create_adaptor
from factory.distill.methods.base import DISTILL_METHODS, Fail, MethodContext, check_head, embedding_dim
from factory.files import atomic_path
from factory.models.checkpoint import read_checkpoint
from factory.models.heads import create_head
from factory.recipe import TrainConfig
from factory.recipe.schema import between
from factory.train.loop import clear_resume, fit, restore_rng, rng_state
from factory.train.task import ModuleTask, TaskOutput
from factory.train.tasks import MarginClassificationTask, model_input

ADAPTOR_FILE = "adaptor.pt"
ADAPTOR_FORMAT = "factory.adaptor/1"


def concat_teachers(teachers: Sequence[nn.Module], pixels: torch.Tensor) -> torch.Tensor:
    """Each teacher's normalised embedding of ``pixels`` (uint8), concatenated in the teachers' order."""
    return torch.cat([F.normalize(t(model_input(t, pixels)), dim=1) for t in teachers], dim=1)


def a_kd_loss(student: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    """a-KD: ``weight`` times the MSE (mean over samples and dimensions) of the normalised embeddings."""
    return weight * F.mse_loss(F.normalize(student, dim=1), F.normalize(target, dim=1))


def _frozen(teachers: Sequence[nn.Module]) -> nn.ModuleList:
    return nn.ModuleList(t.eval().requires_grad_(False) for t in teachers)


class AdaptorTask(MarginClassificationTask):
    """Phase 1: the adaptor (the loop's model) and a margin head learn identities from the frozen teachers.

    The teachers are not resumed (they are rebuilt from their checkpoints); the head is.
    """

    def __init__(self, teachers: Sequence[nn.Module], head: nn.Module) -> None:
        super().__init__(head)
        self.teachers = _frozen(teachers)
        self.modules = {"teachers": self.teachers, "head": head}

    def inputs(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """The adaptor embeds the teachers' concatenated normalised embeddings, not pixels."""
        del model
        with torch.no_grad():
            return concat_teachers(self.teachers, batch["pixels"])


class MSTKDTask(ModuleTask):
    """Phase 2: the student learns the frozen adaptor's target (a-KD), with a margin head's cross-entropy (EAF-KD).

    Only the EAF-KD head is trained and resumed with the student; teachers and adaptor are frozen.
    """

    def __init__(
        self, teachers: Sequence[nn.Module], adaptor: nn.Module, head: nn.Module | None, weight: float
    ) -> None:
        self.teachers = _frozen(teachers)
        self.adaptor = adaptor.eval().requires_grad_(False)  # eval: DLDP's dropout must not move the target
        self.head, self.weight = head, float(weight)
        self.modules = {"teachers": self.teachers, "adaptor": self.adaptor}
        if head is not None:
            self.modules["head"] = head
        self.trainable = () if head is None else ("head",)
        self.prepared: dict[str, Any] = {}  # what the build did before the student (the adaptor), for the metrics

    def report(self) -> dict[str, Any]:
        """The teachers' order and the adaptor's training record, for the distill stage's metrics."""
        return dict(self.prepared)

    def target(self, pixels: torch.Tensor) -> torch.Tensor:
        """The multi-teacher target of each image: normalise(adaptor(concatenated teacher embeddings))."""
        with torch.no_grad():
            return F.normalize(self.adaptor(concat_teachers(self.teachers, pixels)), dim=1)

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> TaskOutput:
        """λ·MSE to the target (a-KD), plus the margin cross-entropy with a head (EAF-KD)."""
        target = self.target(batch["pixels"])
        student = model(model_input(model, batch["pixels"]))
        loss = a_kd_loss(student, target, self.weight)
        terms = {"kd": loss.item()}
        if self.head is not None:  # EAF-KD: the margin head's cross-entropy on the student's embedding, plus a-KD
            ce = F.cross_entropy(self.head(student, batch["labels"]), batch["labels"])
            loss = ce + loss
            terms["ce"] = ce.item()
        cosine = F.cosine_similarity(student.detach(), target, dim=1)
        return TaskOutput(loss, {**terms, "cos": cosine.mean().item()}, per_sample={"agreement": cosine})


def adaptor_train(train: TrainConfig, steps: int | None, lr: float) -> TrainConfig:
    """The adaptor's training settings: the student's, with its own steps and lr and the schedule scaled to them.

    The paper trains adaptor and student for the same 26 epochs with the same decays, so the adaptor takes the
    student's optimiser, batch, clipping and schedule shape; every step count of the schedule (warm-up,
    ``step_every``, milestones) is scaled by adaptor steps / student steps. Milestones that meet at one step after
    rounding all apply there, so the total decay stays the student's.
    """
    steps = steps or train.steps
    ratio = steps / train.steps
    return dataclasses.replace(
        train,
        steps=steps,
        lr=lr,
        warmup_steps=round(train.warmup_steps * ratio),
        step_every=max(1, round(train.step_every * ratio)) if train.step_every else 0,
        milestones=[min(steps - 1, max(1, round(m * ratio))) for m in train.milestones],
    )


def save_adaptor(path: Path, adaptor: nn.Module, kind: str, teachers: Sequence[str], record: dict[str, Any]) -> None:
    """Write the trained adaptor with its teachers' order, its training record and torch's generators' state."""
    # Through JSON: pickle writes a string seen twice as a reference to the first, so a record partly read back from
    # a resume checkpoint (other string objects) would give the same content other bytes.
    plain = json.loads(json.dumps({"teachers": list(teachers), "record": record}))
    state = {
        "format": ADAPTOR_FORMAT,
        "adaptor": kind,
        "teachers": plain["teachers"],
        "state_dict": {k: v.detach().contiguous() for k, v in adaptor.state_dict().items()},
        "record": plain["record"],
        # torch's generators only: the stage seeds them, while Python's and numpy's start from the OS in every
        # process, so saving those would make equal adaptors different bytes and restore nothing the run determines.
        "rng": {k: v for k, v in rng_state().items() if k in ("torch", "cuda")},
    }
    # Saved through a file object: torch names the archive inside after a path it is given, and the temporary
    # path's random name would make equal adaptors different bytes.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def load_adaptor(path: Path, adaptor: nn.Module, kind: str, teachers: Sequence[str]) -> dict[str, Any]:
    """Load a trained adaptor into ``adaptor`` and restore the generators it was saved with; return its record.

    Raises:
        ValueError: the file holds another adaptor, or one trained on other teachers or in another order (its
            input blocks would mean other teachers); the message says to delete it.
    """
    state = read_checkpoint(path)
    fix = f"delete {path} to train the adaptor again"
    if state.get("format") != ADAPTOR_FORMAT:
        raise ValueError(f"{path} is not an MST-KD adaptor (format {state.get('format')!r}); {fix}")
    if state["adaptor"] != kind or list(state["teachers"]) != list(teachers):
        raise ValueError(
            f"{path} holds a {state['adaptor']!r} adaptor over teachers {state['teachers']}, this stage needs "
            f"{kind!r} over {list(teachers)} (in that order); {fix}"
        )
    try:
        adaptor.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit this adaptor ({e}); {fix}") from None
    restore_rng(state["rng"])
    return dict(state["record"])


@DISTILL_METHODS.register("mst_kd")
@dataclass
class MSTKD:
    """MST-KD: the student distils the adaptor's fusion of every teacher's normalised embedding.

    ``adaptor``: ``sl`` (default: the paper's best with both losses, Tables 2 and 3), ``dul`` or ``dldp``.
    ``loss``: ``eaf_kd`` (default: the paper's best, 93.61 % mean vs 90.96 % for a-KD with SL) or ``a_kd``
    (no labels in the student's loss). ``adaptor_steps`` null trains the adaptor as long as the student.
    ``head``, ``margin``, ``scale``, ``margin_std``: the margin head of the adaptor and of EAF-KD (ElasticArcFace,
    s 64, m 0.5, σ 0.05 as in the paper; ``margin``/``margin_std`` null are the head's own).
    """

    labelled: ClassVar[bool] = True  # the adaptor (and EAF-KD) learn identities: the stage opens a labelled source
    multi_teacher: ClassVar[bool] = True  # the stage loads every teacher of the build, in its recorded order

    kind: str = "mst_kd"
    adaptor: str = field(default="sl", metadata={"registry": "adaptor"})
    loss: Literal["a_kd", "eaf_kd"] = "eaf_kd"
    lambda_kd: float = field(default=10000.0, metadata=between(gt=0))
    adaptor_steps: int | None = field(default=None, metadata=between(ge=1))
    adaptor_lr: float = field(default=1.0, metadata=between(gt=0))
    identities_per_group: int = field(default=100, metadata=between(ge=1))
    head: str = field(default="elastic_arcface", metadata={"registry": "head"})
    margin: float | None = None  # its range depends on the head (checked with it)
    scale: float = field(default=64.0, metadata=between(gt=0))
    margin_std: float | None = field(default=None, metadata=between(ge=0))  # elastic heads only

    def check(self, fail: Fail) -> None:
        """The margin must be one the head can train with, and only an elastic head takes a ``margin_std``."""
        check_head(self.head, self.margin, self.margin_std, fail)

    def build(self, ctx: MethodContext) -> MSTKDTask:
        """Train (or read back) the adaptor over the frozen teachers, freeze it, and return the student's task.

        Raises:
            ValueError: fewer than two teachers, no labels, or a context without the stage's folder, training
                settings and source (the distill stage gives all of them).
        """
        if len(ctx.teachers) < 2:
            raise ValueError(
                f"distill.method mst_kd distils several teachers and got {len(ctx.teachers)}: set "
                "teacher.specialists to per_group (or balanced), or name pre-trained ones in teacher.checkpoints"
            )
        if ctx.num_classes is None:
            raise ValueError("distill.method mst_kd trains its adaptor on identity labels, and the source gave none")
        if ctx.work_dir is None or ctx.train is None or ctx.open_source is None:
            raise ValueError("distill.method mst_kd trains its adaptor first: it needs work_dir, train and open_source")
        in_dim = sum(embedding_dim(t) for t in ctx.teachers)
        adaptor = create_adaptor(self.adaptor, in_dim, embedding_dim(ctx.student))
        path = ctx.work_dir / ADAPTOR_FILE
        if path.is_file():
            record = {**load_adaptor(path, adaptor, self.adaptor, ctx.teacher_names), "reused": True}
        else:
            record = self._train_adaptor(adaptor, ctx, path)
        head = self._head(embedding_dim(ctx.student), ctx.num_classes) if self.loss == "eaf_kd" else None
        task = MSTKDTask(ctx.teachers, adaptor, head, self.lambda_kd)
        task.prepared = {"teachers": list(ctx.teacher_names), "adaptor": record}
        return task

    def _train_adaptor(self, adaptor: nn.Module, ctx: MethodContext, path: Path) -> dict[str, Any]:
        head = self._head(embedding_dim(ctx.student), ctx.num_classes)
        cfg = adaptor_train(ctx.train, self.adaptor_steps, self.adaptor_lr)
        task = AdaptorTask(ctx.teachers, head)
        result = fit(adaptor, task, ctx.open_source(), cfg, ctx.work_dir, "adaptor", ctx.progress)
        # Only what the run determines goes into the file (no timings), so equal runs write equal bytes.
        record = {"steps": result.steps, "final": result.final_terms, "history": result.history}
        # The adaptor's resume checkpoint goes first: killed between the two, the adaptor trains again (the same
        # run), where the other order would let the student resume from the adaptor's checkpoint.
        clear_resume(ctx.work_dir)
        save_adaptor(path, adaptor, self.adaptor, ctx.teacher_names, record)
        return {
            **record,
            "reused": False,
            "resumed_from": result.resumed_from,
            "images_per_second": result.images_per_second,
        }

    def _head(self, dim: int, classes: int) -> nn.Module:
        overrides = {} if self.margin is None else {"margin": self.margin}
        return create_head(self.head, dim, classes, scale=self.scale, margin_std=self.margin_std, **overrides)

    def describe(self) -> str:
        """One line for metrics and reports."""
        loss = {"a_kd": "a-KD", "eaf_kd": "EAF-KD"}[self.loss]
        return f"MST-KD ({loss}, {self.adaptor.upper()} adaptor, lambda {self.lambda_kd:g})"
