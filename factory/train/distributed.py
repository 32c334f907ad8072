"""Data-parallel training over several processes (DDP): who this process is and what the processes share.

``factory build --nproc N`` runs a training stage as N processes ("ranks") under torchrun
(:mod:`factory.pipeline.launch`). Each rank runs the same training loop with the same source: every rank computes
the step's whole batch (it is a deterministic function of the step and the source's state) and trains on its own
contiguous slice of it (rank r of W takes rows ``r·B/W .. (r+1)·B/W``). DDP
(:class:`~torch.nn.parallel.DistributedDataParallel`) averages the model's gradients; what the ranks must also agree
on is made global here:

- the logged loss terms are averaged over the ranks (so a NaN stops every rank at the same step);
- per-sample values (a re-sampling source's ``agreement``) are gathered into the whole batch's before the source's
  feedback, and a task's state fed by the batch (QUD's queue) enqueues the gathered features (:func:`gather`), so every
  rank's source and task state stays identical to rank 0's;
- the gradients of the task's own parameters (a margin head: DDP wraps only the model) are averaged by hand.

Only rank 0 writes (checkpoints, the final model, TensorBoard, the progress bar); every rank resumes from the same
checkpoint. Without a process group (one process) every function here is the identity: the loop reads the same.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from factory.recipe import TrainConfig
from factory.train.device import UNITS, capacity

# Collective backend per device type: gloo runs on the CPU, NCCL on NVIDIA GPUs.
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: ``rank`` of ``size``, on its node's GPU ``local_rank``."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process is the one that writes (rank 0)."""
        return self.rank == 0

    def shard(self, batch: dict[str, Any]) -> dict[str, Any]:
        """This rank's contiguous slice of every per-sample tensor of the whole ``batch`` (the batch itself alone)."""
        if self.size == 1:
            return batch
        n = len(batch["pixels"])
        if n % self.size:
            raise ValueError(f"a batch of {n} cannot be split evenly over {self.size} processes")
        lo, hi = self.rank * n // self.size, (self.rank + 1) * n // self.size
        return {k: v[lo:hi] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """Each value averaged over the ranks (the same keys on every rank: the same task computed them)."""
        if self.size == 1:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.size).tolist(), strict=True))

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients of parameters DDP does not own (the task's) over the ranks, in place."""
        if self.size == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(self.size)

    def replicate(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` wrapped in DDP, or the model itself with one process.

        DDP broadcasts rank 0's weights now, then averages the gradients of every backward pass over the ranks.
        """
        if self.size == 1:
            return model
        # BatchNorm in each rank normalises over that rank's slice of the batch, not the whole batch, so a run on
        # 2 processes is not bit-identical to one on 1 (SyncBatchNorm would fix that, and it runs on GPUs only).
        # DDP broadcasts rank 0's running statistics before each forward pass, so all ranks keep rank 0's.
        return _Replica(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics), as DDP does before each forward pass.

        After the last step each rank holds the statistics of its own slice; the model rank 0 saves is its own.
        """
        if self.size == 1:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)

    def check_replicas(self, label: str, **states: dict[str, Any]) -> None:
        """Refuse ranks that ended with different states (a bug: DDP and the gathers must keep them identical).

        Args:
            label: the training run, named in the error.
            states: name -> a state dict (the model's, the task's, the source's), compared by digest.

        Raises:
            RuntimeError: naming each state that is not the same on every rank.
        """
        if self.size == 1:
            return
        mine = {name: state_digest(state) for name, state in states.items()}
        everyone: list[dict[str, str] | None] = [None] * self.size
        dist.all_gather_object(everyone, mine)
        differ = sorted({name for other in everyone if other is not None for name in mine if other[name] != mine[name]})
        if differ:
            raise RuntimeError(f"{label}: the {self.size} DDP processes ended with different {' and '.join(differ)}")


class _Replica(DistributedDataParallel):
    """DDP over the model, still answering ``contract`` (tasks derive the model's input from it)."""

    @property
    def contract(self) -> Any:
        """The wrapped model's input contract."""
        return self.module.contract


def current_world() -> World:
    """This process's :class:`World`: from the process group torchrun's worker started, or a world of one."""
    if not _initialised():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def gather(values: torch.Tensor) -> torch.Tensor:
    """Every rank's ``values`` (its slice of the batch), concatenated in rank order: the whole batch's.

    The identity with one process. Every rank must call it with a tensor of the same shape (even slices do).
    """
    world = current_world()
    if world.size == 1:
        return values
    parts = [torch.empty_like(values) for _ in range(world.size)]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts)


def gather_per_sample(per_sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`gather` of each detached per-sample value, for the source's feedback."""
    return {name: gather(value.detach()) for name, value in per_sample.items()}


def processes_note(world_size: int) -> str:
    """``" on N processes"`` for a DDP run's summary line; nothing for one process."""
    return f" on {world_size} processes" if world_size > 1 else ""


def state_digest(state: Any) -> str:
    """sha256 of a nested state (dicts, lists, tensors, plain values): equal states, equal digests."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor{tuple(value.shape)}{value.dtype}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(f"key{key!r}".encode())
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"seq{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(repr(value).encode())


def check_processes(nproc: int, trainings: dict[str, TrainConfig]) -> None:
    """Refuse ``--nproc`` before anything runs when a training stage cannot run on that many processes.

    Args:
        nproc: processes per training stage.
        trainings: the training stages' section names (``teacher``, ``distill``) -> their training settings.

    Raises:
        ValueError: more processes than the device has (CPUs this process may use, or GPUs), or a batch that does
            not split into slices of at least 2 (BatchNorm cannot normalise one sample); a bad ``train.device`` too.
    """
    if nproc == 1:
        return
    for section, cfg in trainings.items():
        kind, available = capacity(cfg.device, section)
        if nproc > available:
            raise ValueError(
                f"--nproc {nproc}: {section}.train.device {cfg.device} trains on {kind}, and this machine has "
                f"{available} {UNITS[kind]}, one per training process: use --nproc {available} or fewer"
            )
        if cfg.batch_size % nproc or cfg.batch_size // nproc < 2:
            raise ValueError(
                f"--nproc {nproc}: {section}.train.batch_size {cfg.batch_size} must split evenly into {nproc} slices "
                "of at least 2 images (BatchNorm cannot normalise one): use a multiple of it"
            )
