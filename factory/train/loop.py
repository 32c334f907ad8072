"""The one training loop. What is trained and how the loss is computed lives in small task objects.

``fit`` pulls the batch of each step from a source (:class:`~factory.data.sources.Source`), runs the task on it, steps
the optimiser and hands the task's per-sample output back to the source (its feedback hook). Batches are a
deterministic function of the step and of the source's saved state, so a run resumed from a checkpoint at step k
sees exactly the batches an uninterrupted run would have seen; the checkpoint holds the model, the task's and the
source's state, the optimiser, the schedule and the global random generators (torch's, CUDA's, Python's and
numpy's), which tasks draw from for dropout or a per-sample margin.

It trains on ``train.device`` in ``train.amp``'s precision (:mod:`factory.train.device`), and under torchrun as one
rank of a data-parallel run (:mod:`factory.train.distributed`): with one process those are the identity.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from factory.data.sources import Source
from factory.files import atomic_path
from factory.models.checkpoint import read_checkpoint
from factory.recipe import TrainConfig
from factory.train.device import precision_for, resolve_device
from factory.train.distributed import current_world, gather_per_sample
from factory.train.optim import build_optimizer, build_scheduler
from factory.train.task import Task

RESUME_FILE = "resume.pt"
TENSORBOARD_DIR = "tensorboard"


@dataclass
class FitResult:
    """Summary of a training run (times and throughput over the steps this call ran, not the resumed ones)."""

    steps: int
    resumed_from: int
    seconds: float
    images_per_second: float
    final_terms: dict[str, float]
    history: list[dict[str, float]]
    # Mean seconds per step in ``source.batch`` (rendering, decoding, re-sampling), and in the rest of the step
    # (transfer to the device, the task with any teacher inside it, backward, optimiser step, feedback). On a GPU
    # the host produces the next batch while queued kernels still run, so ``data_seconds`` is the host's time, of
    # which some may be hidden behind the device's.
    data_seconds: float = 0.0
    compute_seconds: float = 0.0
    world_size: int = 1  # training processes (DDP ranks); images_per_second counts all of theirs

    def metrics(self) -> dict[str, Any]:
        """What a training stage reports of the run: steps, where it resumed, throughput, final terms, history."""
        return {
            "steps": self.steps,
            "resumed_from": self.resumed_from,
            "images_per_second": self.images_per_second,
            "world_size": self.world_size,
            "final": self.final_terms,
            "history": self.history,
        }


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
    device: str | torch.device | None = None,
) -> FitResult:
    """Train ``model`` for ``cfg.steps`` steps, checkpointing to ``work_dir/resume.pt`` and resuming from it.

    In a process group started by torchrun (``factory build --nproc N``) this is one rank of a DDP run: it trains on
    its slice of each step's batch and only rank 0 writes (see :mod:`factory.train.distributed`).

    Args:
        model: the network being trained (moved to the device, and to channels_last when ``cfg.channels_last``).
        task: loss computation; its own parameters (e.g. a margin head) are trained too.
        source: ``source.batch(step)`` gives the batch of that step, with at least ``"pixels"`` (uint8 N×3×H×W).
        cfg: steps, batch size, optimiser, schedule, gradient clipping, checkpoint cadence, TensorBoard logging,
            the device (``cfg.device``) and the mixed precision (``cfg.amp``).
        work_dir: where the resumable checkpoint lives, and the TensorBoard log under ``tensorboard/<label>``.
        label: name on the progress bar and of the TensorBoard run.
        progress: show a progress bar.
        log_every: how often to record loss terms into the history (and TensorBoard).
        device: where the model, the task and each batch's tensors go; None: ``cfg.device`` (under DDP, this rank's
            GPU when it is cuda).

    Returns:
        Steps run, where it resumed, throughput, the step time split, the loss history and the number of processes.

    Raises:
        NonFiniteLoss: the loss, or the gradient norm when clipping, is NaN or infinite.
        ValueError: ``train.device`` cuda without CUDA, or ``train.amp`` the device cannot run.
    """
    from tqdm import tqdm

    world = current_world()
    device = resolve_device(cfg.device if device is None else device, world.local_rank, label)
    precision = precision_for(cfg.amp, device, label)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    task.prepare(device)
    params = list(model.parameters()) + list(task.parameters())
    optimizer = build_optimizer(params, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = precision.scaler(device)
    resume = work_dir / RESUME_FILE
    start, history = 0, []
    saved = None  # the step of the last good checkpoint (what a stop on a NaN points back to)
    if resume.is_file():  # every rank resumes from the one checkpoint rank 0 wrote
        try:
            state = read_checkpoint(resume, map_location=device)
        except ValueError as e:  # damaged by something outside the factory: it writes resume.pt atomically
            raise ValueError(f"{e}; delete it to start this training over") from None
        _refuse_changed_settings(resume, state.get("train"), _settings(cfg))
        model.load_state_dict(state["model"])
        task.load_state_dict(state["task"])
        source.load_state_dict(state["source"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state.get("scaler", {}))  # {} from a disabled scaler, or a checkpoint before amp
        start, history = int(state["step"]), list(state["history"])
        saved = start
        if "rng" in state:  # absent from a checkpoint written before the loop saved the generators
            restore_rng(state["rng"])
    replica = world.replicate(model, device)  # after the resume: DDP starts every rank from rank 0's weights
    model.train()
    seen, t0, terms = 0, time.perf_counter(), {}
    data_time = compute_time = 0.0
    writer = _tensorboard_writer(cfg, work_dir / TENSORBOARD_DIR / label, start) if world.main else None
    window = _Window(time.perf_counter())
    shown = progress and world.main
    bar = tqdm(total=cfg.steps, initial=start, desc=label, disable=not shown, unit="step", dynamic_ncols=True)
    try:
        for step in range(start, cfg.steps):
            t_step = time.perf_counter()
            batch = source.batch(step)
            t_data = time.perf_counter()
            with precision.autocast(device):  # the forward pass and the loss; backward runs outside, as torch advises
                out = task(replica, _to_device(world.shard(batch), device))
            # The mean over ranks: what is logged, and every rank stops on a NaN at the same step (one rank stopping
            # alone would leave the others waiting in the next all-reduce).
            terms = world.mean({"loss": out.loss.item(), **out.terms}, device)
            loss = terms["loss"]
            if not math.isfinite(loss):
                raise NonFiniteLoss(_stop_message(label, f"loss is {loss}", step, terms, resume, saved))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out.loss).backward()
            world.average_gradients(task.parameters())  # DDP averaged the model's
            if cfg.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm).item()
                if math.isfinite(norm):
                    terms["grad_norm"] = norm
                # Clipping a NaN or infinite norm would write NaN (or zeros) into every weight without a word; with
                # fp16 an overflow is the loss scale's to handle (the scaler skips that step and lowers the scale).
                elif not scaler.is_enabled():
                    raise NonFiniteLoss(_stop_message(label, f"gradient norm is {norm}", step, terms, resume, saved))
            lr = scheduler.get_last_lr()[0]  # the lr of this step (scheduler.step() moves on to the next one's)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            # The whole batch's per-sample values: every rank's source then adapts to the same feedback.
            source.feedback(step, batch, gather_per_sample(out.per_sample))
            images = batch["pixels"].shape[0]
            t_end = time.perf_counter()
            data_time += t_data - t_step
            compute_time += t_end - t_data
            seen += images
            window.add(images, t_data - t_step, t_end - t_data)
            if step % log_every == 0 or step == cfg.steps - 1:
                history.append({"step": step, "lr": lr, **terms})
                if writer is not None:
                    _write_scalars(writer, step, terms, lr, window.take(time.perf_counter()))
            bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()}, refresh=False)
            bar.update(1)
            done = step + 1
            if done % cfg.checkpoint_every == 0 and done < cfg.steps:
                saved = done  # every rank counts it; rank 0 writes it
            if saved == done and world.main:
                state = {
                    "model": model.state_dict(),
                    "task": task.state_dict(),
                    "source": source.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(),
                    "step": done,
                    "history": history,
                    "train": _settings(cfg),
                }
                with atomic_path(resume) as tmp:
                    torch.save(state, tmp)
                if writer is not None:
                    writer.flush()  # what a resumed run keeps (it purges the events after its start step)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    world.sync_buffers(model)
    world.check_replicas(label, model=model.state_dict(), task=task.state_dict(), source=source.state_dict())
    seconds = time.perf_counter() - t0
    ran = cfg.steps - start
    model.eval()
    return FitResult(
        steps=cfg.steps,
        resumed_from=start,
        seconds=seconds,
        images_per_second=seen / seconds if seconds > 0 else 0.0,
        final_terms=terms,
        history=history,
        data_seconds=data_time / ran if ran > 0 else 0.0,
        compute_seconds=compute_time / ran if ran > 0 else 0.0,
        world_size=world.size,
    )


def _stop_message(label: str, what: str, step: int, terms: dict[str, float], resume: Path, saved: int | None) -> str:
    """Why training stopped, with every loss term of that step and where a fixed recipe would resume from."""
    shown = ", ".join(f"{k} {v:.4g}" for k, v in terms.items())
    where = (
        f"the last good checkpoint is {resume} (step {saved})"
        if saved is not None
        else "no checkpoint was written before it (train.checkpoint_every)"
    )
    return f"{label}: {what} at step {step}; lower the lr in the recipe (terms: {shown}); {where}"


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _settings(cfg: TrainConfig) -> dict[str, Any]:
    # What shapes the run's trajectory; TensorBoard and the checkpoint cadence do not (changing them is harmless).
    settings = dataclasses.asdict(cfg)
    for harmless in ("tensorboard", "checkpoint_every"):
        settings.pop(harmless, None)
    return settings


def _refuse_changed_settings(resume: Path, saved: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """A checkpoint continues only the run that wrote it: other training settings would splice two runs together."""
    if saved is None:  # written before checkpoints recorded their settings
        return
    changed = [
        f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k)
    ]
    if changed:
        raise ValueError(
            f"{resume} was written with other training settings ({'; '.join(changed)}): resuming would splice two "
            "runs together; restore those settings, or delete it to start this training over"
        )


def clear_resume(work_dir: Path) -> None:
    """Drop the resumable checkpoint once the final model is safely written (it is not a deliverable)."""
    (work_dir / RESUME_FILE).unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """The global random generators' states, as tensors and plain values (a ``weights_only`` checkpoint loads them).

    CUDA's is saved only once CUDA is initialised: asking for it would otherwise start a CUDA context in a run that
    trains on the CPU (and a run on the GPU has initialised it by the time it checkpoints).
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global random generators to :func:`rng_state`'s ``state``, so a resumed run draws what it would have.

    Generator states are loaded back on the CPU whatever device the checkpoint was mapped to (torch sets a state only
    from a CPU byte tensor). CUDA's is restored for the devices this machine has. A state without Python's or
    numpy's (one that keeps torch's alone) leaves those generators as they are.
    """
    torch.set_rng_state(state["torch"].cpu())
    if "python" in state:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
    if "numpy" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


class _Window:
    """Images and step times since the last log line: the throughput TensorBoard shows is the recent one."""

    def __init__(self, now: float) -> None:
        self.restart(now)

    def restart(self, now: float) -> None:
        """Start an empty window at ``now``."""
        self.since, self.images, self.steps, self.data, self.compute = now, 0, 0, 0.0, 0.0

    def add(self, images: int, data: float, compute: float) -> None:
        self.images, self.steps = self.images + images, self.steps + 1
        self.data, self.compute = self.data + data, self.compute + compute

    def take(self, now: float) -> dict[str, float]:
        """Images per second and mean data / compute seconds per step since the last call; starts a new window."""
        elapsed, steps = now - self.since, max(1, self.steps)
        speed = {
            "images_per_second": self.images / elapsed if elapsed > 0 else 0.0,
            "data_seconds": self.data / steps,
            "compute_seconds": self.compute / steps,
        }
        self.restart(now)
        return speed


def _tensorboard_writer(cfg: TrainConfig, log_dir: Path, start: int) -> Any:
    """A SummaryWriter for ``log_dir``, or None when the recipe turns logging off.

    A resumed run purges the events the interrupted one wrote after its last checkpoint (``purge_step``), so the
    curves do not show those steps twice.
    """
    if not cfg.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package, a pinned dependency

    return SummaryWriter(str(log_dir), purge_step=start if start else None)


def _write_scalars(writer: Any, step: int, terms: dict[str, float], lr: float, speed: dict[str, float]) -> None:
    """Every loss term under ``terms/``, the lr, and throughput and step times under ``speed/``."""
    for name, value in terms.items():
        writer.add_scalar(f"terms/{name}", value, step)
    writer.add_scalar("lr", lr, step)
    for name, value in speed.items():
        writer.add_scalar(f"speed/{name}", value, step)
