"""The one training loop. What is trained and how the loss is computed lives in small task objects.

A task is a callable ``task(model, batch) -> TaskOutput`` (plus ``task.parameters()`` for anything it trains, such
as a margin head). Batches come from ``batches(step)``, a deterministic function of the step, so that a run resumed
from a checkpoint at step k sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from factory.files import atomic_path
from factory.recipe import TrainConfig
from factory.train.optim import build_optimizer, build_scheduler

RESUME_FILE = "resume.pt"


@dataclass
class TaskOutput:
    """What a task returns for one batch: the loss to minimise and named scalar terms to log."""

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


class Task(Protocol):
    """Computes the loss of ``model`` on one batch."""

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> TaskOutput:
        """Loss and logged values of ``model`` on ``batch``."""
        ...

    def parameters(self) -> list[nn.Parameter]:
        """The task's own trainable parameters (a margin head's weights), optimised with the model's."""
        ...


@dataclass
class FitResult:
    """Summary of a training run."""

    steps: int
    resumed_from: int
    seconds: float
    images_per_second: float
    final_terms: dict[str, float]
    history: list[dict[str, float]]


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: continuing would only waste the remaining steps."""


def fit(
    model: nn.Module,
    task: Task,
    batches: Callable[[int], dict[str, Any]],
    cfg: TrainConfig,
    work_dir: Path,
    label: str = "train",
    progress: bool = True,
    log_every: int = 50,
) -> FitResult:
    """Train ``model`` for ``cfg.steps`` steps, checkpointing to ``work_dir/resume.pt`` and resuming from it.

    Args:
        model: the network being trained (moved to channels_last when ``cfg.channels_last``).
        task: loss computation; its own parameters (e.g. a margin head) are trained too.
        batches: ``batches(step)`` returns the batch for that step, with at least ``"pixels"`` (uint8 N×3×H×W).
        cfg: steps, batch size, optimiser, schedule and checkpoint cadence.
        work_dir: where the resumable checkpoint lives.
        label: name on the progress bar.
        progress: show a progress bar.
        log_every: how often to record loss terms into the history.

    Returns:
        Steps run, where it resumed, throughput and the loss history.
    """
    from tqdm import tqdm

    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = list(model.parameters()) + list(task.parameters())
    optimizer = build_optimizer(params, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    resume = work_dir / RESUME_FILE
    start, history = 0, []
    if resume.is_file():
        state = torch.load(resume, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        for p, saved in zip(task.parameters(), state["task"], strict=True):
            p.data.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = int(state["step"]), list(state["history"])
    model.train()
    seen, t0, terms = 0, time.perf_counter(), {}
    bar = tqdm(total=cfg.steps, initial=start, desc=label, disable=not progress, unit="step", dynamic_ncols=True)
    for step in range(start, cfg.steps):
        batch = batches(step)
        out = task(model, batch)
        if not math.isfinite(out.loss.item()):
            raise NonFiniteLoss(f"{label}: loss is {out.loss.item()} at step {step}; lower the lr in the recipe")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        scheduler.step()
        seen += batch["pixels"].shape[0]
        terms = {"loss": out.loss.item(), **out.terms}
        if step % log_every == 0 or step == cfg.steps - 1:
            history.append({"step": step, "lr": scheduler.get_last_lr()[0], **terms})
        bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()}, refresh=False)
        bar.update(1)
        done = step + 1
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            _save_resume(resume, model, task, optimizer, scheduler, done, history)
    bar.close()
    seconds = time.perf_counter() - t0
    model.eval()
    return FitResult(
        steps=cfg.steps,
        resumed_from=start,
        seconds=seconds,
        images_per_second=seen / seconds if seconds > 0 else 0.0,
        final_terms=terms,
        history=history,
    )


def _save_resume(
    path: Path,
    model: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    history: list[dict[str, float]],
) -> None:
    state = {
        "model": model.state_dict(),
        "task": [p.detach().clone() for p in task.parameters()],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "history": history,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def clear_resume(work_dir: Path) -> None:
    """Drop the resumable checkpoint once the final model is safely written (it is not a deliverable)."""
    (work_dir / RESUME_FILE).unlink(missing_ok=True)
