"""The one training loop. What is trained and how the loss is computed lives in small task objects.

``fit`` pulls the batch of each step from a source (:class:`~factory.data.sources.Source`), runs the task on it, steps
the optimiser and hands the task's per-sample output back to the source (its feedback hook). Batches are a
deterministic function of the step and of the source's saved state, so a run resumed from a checkpoint at step k
sees exactly the batches an uninterrupted run would have seen; the checkpoint holds the model, the task's and the
source's state, the optimiser and the schedule.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from factory.data.sources import Source
from factory.files import atomic_path
from factory.models.checkpoint import read_checkpoint
from factory.recipe import TrainConfig
from factory.train.optim import build_optimizer, build_scheduler
from factory.train.task import Task

RESUME_FILE = "resume.pt"


@dataclass
class FitResult:
    """Summary of a training run."""

    steps: int
    resumed_from: int
    seconds: float
    images_per_second: float
    final_terms: dict[str, float]
    history: list[dict[str, float]]


class NonFiniteLoss(ValueError):
    """The loss became NaN or infinite: continuing would only waste the remaining steps.

    A ValueError because the cure is in the recipe (a smaller lr, other data), so the CLI reports it as bad input.
    """


def fit(
    model: nn.Module,
    task: Task,
    source: Source,
    cfg: TrainConfig,
    work_dir: Path,
    label: str = "train",
    progress: bool = True,
    log_every: int = 50,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Train ``model`` for ``cfg.steps`` steps, checkpointing to ``work_dir/resume.pt`` and resuming from it.

    Args:
        model: the network being trained (moved to ``device``, and to channels_last when ``cfg.channels_last``).
        task: loss computation; its own parameters (e.g. a margin head) are trained too.
        source: ``source.batch(step)`` gives the batch of that step, with at least ``"pixels"`` (uint8 N×3×H×W).
        cfg: steps, batch size, optimiser, schedule and checkpoint cadence.
        work_dir: where the resumable checkpoint lives.
        label: name on the progress bar.
        progress: show a progress bar.
        log_every: how often to record loss terms into the history.
        device: where the model, the task and each batch's tensors go.

    Returns:
        Steps run, where it resumed, throughput and the loss history.
    """
    from tqdm import tqdm

    device = torch.device(device)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    task.prepare(device)
    params = list(model.parameters()) + list(task.parameters())
    optimizer = build_optimizer(params, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    resume = work_dir / RESUME_FILE
    start, history = 0, []
    if resume.is_file():
        try:
            state = read_checkpoint(resume, map_location=device)
        except ValueError as e:  # damaged by something outside the factory: it writes resume.pt atomically
            raise ValueError(f"{e}; delete it to start this training over") from None
        model.load_state_dict(state["model"])
        task.load_state_dict(state["task"])
        source.load_state_dict(state["source"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = int(state["step"]), list(state["history"])
    model.train()
    seen, t0, terms = 0, time.perf_counter(), {}
    bar = tqdm(total=cfg.steps, initial=start, desc=label, disable=not progress, unit="step", dynamic_ncols=True)
    for step in range(start, cfg.steps):
        batch = _to_device(source.batch(step), device)
        out = task(model, batch)
        if not math.isfinite(out.loss.item()):
            raise NonFiniteLoss(f"{label}: loss is {out.loss.item()} at step {step}; lower the lr in the recipe")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        scheduler.step()
        source.feedback(step, batch, out.per_sample)
        seen += batch["pixels"].shape[0]
        terms = {"loss": out.loss.item(), **out.terms}
        if step % log_every == 0 or step == cfg.steps - 1:
            history.append({"step": step, "lr": scheduler.get_last_lr()[0], **terms})
        bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()}, refresh=False)
        bar.update(1)
        done = step + 1
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            state = {
                "model": model.state_dict(),
                "task": task.state_dict(),
                "source": source.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": done,
                "history": history,
            }
            with atomic_path(resume) as tmp:
                torch.save(state, tmp)
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


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def clear_resume(work_dir: Path) -> None:
    """Drop the resumable checkpoint once the final model is safely written (it is not a deliverable)."""
    (work_dir / RESUME_FILE).unlink(missing_ok=True)
