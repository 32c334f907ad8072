"""QUD (Kolf et al.): unsupervised contrastive KD against a FIFO queue of earlier teacher features.

For an image x, q = normalise(student(x)) and k = normalise(teacher(x)). The positive logit is q·k; the negatives
are q·Qᵀ against a queue Q of earlier teacher features, taken as it was **before** this batch is enqueued (a sample
must not be its own negative); the loss is the cross-entropy over [positive, negatives] / τ with the positive as the
target (InfoNCE). The queue starts as random unit vectors and is part of the task's resumable state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from factory.data.world.seeding import make_generator
from factory.distill.methods.base import DISTILL_METHODS, MethodContext, embedding_dim
from factory.distill.methods.feature_kd import require_same_dim
from factory.distill.teacher_cache import DEFAULT_CAPACITY_MB, TeacherEmbeddings
from factory.recipe.schema import between
from factory.train.distributed import gather
from factory.train.task import ModuleTask, TaskOutput
from factory.train.tasks import model_input

STATE_KEYS = ("queue", "pointer")


def infonce_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE of unit ``q`` (N×D) with positives ``k`` (N×D) and negatives ``queue`` (n×D), at ``temperature``."""
    positive = (q * k).sum(dim=1, keepdim=True)
    negatives = q @ queue.t()
    logits = torch.cat([positive, negatives], dim=1) / temperature
    target = torch.zeros(len(q), dtype=torch.long, device=q.device)  # the positive is column 0
    return F.cross_entropy(logits, target)


class QUDTask(ModuleTask):
    """QUD's loss for the training loop; the queue of teacher features and its write pointer are its state.

    The teacher is frozen and not resumed (it is rebuilt from its checkpoint); QUD has no trainable head.
    """

    def __init__(
        self,
        teacher: nn.Module,
        temperature: float = 0.1,
        queue_size: int = 1024,
        seed: int = 0,
        cache_mb: float = DEFAULT_CAPACITY_MB,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"QUD temperature must be > 0, got {temperature}")
        if queue_size < 1:
            raise ValueError(f"QUD queue_size must be >= 1, got {queue_size}")
        self.targets = TeacherEmbeddings(teacher, cache_mb)  # the teacher, called once per static image and flip
        self.teacher = self.targets.teacher
        self.modules = {"teacher": self.teacher}
        self.temperature = temperature
        # Its own named stream: the initial queue is a function of the recipe's seed alone, whatever else is drawn.
        generator = make_generator("qud-queue", seed)
        self.queue = F.normalize(torch.randn(queue_size, embedding_dim(teacher), generator=generator), dim=1)
        self.pointer = 0  # the next row to overwrite, i.e. the oldest entry

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> TaskOutput:
        """InfoNCE of the student's embedding against the teacher's (positive) and the queue (negatives)."""
        k = F.normalize(self.targets(batch), dim=1)
        q = F.normalize(model(model_input(model, batch["pixels"])), dim=1)
        loss = infonce_loss(q, k, self.queue, self.temperature)
        # Under DDP this rank holds a slice of the batch: the queue takes the whole batch's features (every rank's,
        # in batch order), so every rank's queue stays the one a single process would hold.
        self.enqueue(gather(k))
        cosine = (q.detach() * k).sum(dim=1)
        # Per-sample agreement: what a re-sampling source (SynthDistill's step 2) reads through its feedback hook.
        return TaskOutput(loss, {"cos": cosine.mean().item()}, per_sample={"agreement": cosine})

    def report(self) -> dict[str, Any]:
        """How the teacher's embeddings were obtained (the cache's counts)."""
        return {"teacher_cache": self.targets.report()}

    def enqueue(self, k: torch.Tensor) -> None:
        """Write ``k`` into the queue in FIFO order, overwriting the oldest rows.

        Of a batch larger than the queue only its last rows survive, where writing them one by one would leave them.
        """
        size, n = len(self.queue), len(k)
        kept = k[-size:].to(self.queue)
        start = (self.pointer + n - len(kept)) % size
        rows = (start + torch.arange(len(kept), device=self.queue.device)) % size
        # Out of place: the loss of this batch still holds the old queue for its backward pass.
        self.queue = self.queue.index_copy(0, rows, kept)
        self.pointer = (self.pointer + n) % size

    def state_dict(self) -> dict[str, Any]:
        """The queue and its pointer (QUD has no trainable parameters)."""
        return {**super().state_dict(), "queue": self.queue.clone(), "pointer": self.pointer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the queue and its pointer; a queue of another shape belongs to another recipe and is refused."""
        if set(state) != set(STATE_KEYS):
            raise ValueError(f"QUD task state holds {sorted(state)}, expected {sorted(STATE_KEYS)}")
        queue, pointer = state["queue"], int(state["pointer"])
        if tuple(queue.shape) != tuple(self.queue.shape):
            raise ValueError(
                f"QUD queue in the state is {tuple(queue.shape)}, this task's is {tuple(self.queue.shape)}"
            )
        if not 0 <= pointer < len(queue):
            raise ValueError(f"QUD queue pointer {pointer} is outside a queue of {len(queue)}")
        self.queue = queue.to(self.queue).clone()
        self.pointer = pointer

    def prepare(self, device: torch.device) -> None:
        """Move the teacher and the queue to ``device``."""
        super().prepare(device)
        self.queue = self.queue.to(device)


@DISTILL_METHODS.register("qud")
@dataclass
class QUD:
    """QUD: contrastive KD against the teacher's embedding of the same image and a queue of earlier ones.

    The positive is the teacher's embedding of the image, the negatives a FIFO queue of ``queue_size`` earlier
    teacher embeddings, the logits divided by ``temperature`` (the paper: τ 0.1, queue 1024).
    """

    needs_same_dim = True  # compares the embeddings directly: `factory check` refuses two sizes

    kind: str = "qud"
    temperature: float = field(default=0.1, metadata=between(gt=0))
    queue_size: int = field(default=1024, metadata=between(ge=1))

    def build(self, ctx: MethodContext) -> QUDTask:
        """The task for the training loop, its initial queue drawn from the recipe's seed."""
        require_same_dim(ctx, self.kind)
        return QUDTask(
            ctx.teacher,
            temperature=self.temperature,
            queue_size=self.queue_size,
            seed=ctx.seed,
            cache_mb=ctx.teacher_cache_mb,
        )

    def describe(self) -> str:
        """One line for metrics and reports."""
        return f"QUD (InfoNCE, tau {self.temperature:g}, queue {self.queue_size})"
