"""A tiny distillation with every piece of in-flight state real: QUD's queue, SynthDistill's pending latents.

Run as a script by tests/test_distill.py (killed with SIGKILL mid-run, then resumed):
``python distill_toys.py WORK STEPS DELAY OUT``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from factory.data.sources import ProceduralSourceConfig, SourceContext
from factory.data.world.renderer import ProceduralFaceWorld
from factory.distill.methods import MethodContext
from factory.distill.methods.qud import QUD
from factory.recipe import TrainConfig
from factory.runtime.contract import ModelContract
from factory.train.loop import fit


class TinyFaceNet(nn.Module):
    """A few thousand parameters on 112x112 faces: trains in milliseconds per step."""

    def __init__(self) -> None:
        super().__init__()
        self.contract = ModelContract(input_size=(112, 112), embedding_dim=8)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()
        )
        self.fc = nn.Linear(8 * 16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class Slow:
    """Delays every batch of a source, so a test can kill the run between checkpoints; or stops at a step."""

    def __init__(self, source: Any, delay: float, stop_at: int | None = None) -> None:
        self.source, self.delay, self.stop_at = source, delay, stop_at

    def batch(self, step: int) -> dict[str, Any]:
        if step == self.stop_at:
            raise Stopped(step)
        time.sleep(self.delay)
        return self.source.batch(step)

    def __getattr__(self, name: str) -> Any:  # feedback and state are the wrapped source's
        return getattr(self.source, name)


class Stopped(Exception):
    """Raised by :class:`Slow` at its ``stop_at`` step: the run dies there, as with a crash."""


def distill(
    work: Path,
    steps: int = 20,
    delay: float = 0.0,
    checkpoint_every: int = 5,
    batch_size: int = 4,
    queue_size: int = 6,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Distil a tiny student with QUD on dynamically re-sampled procedural faces; return every piece of state."""
    torch.manual_seed(0)
    teacher, student = TinyFaceNet(), TinyFaceNet()
    world = ProceduralFaceWorld()
    where = SourceContext(world=world, batch_size=batch_size, seed=0, split="distill", labelled=False)
    source = ProceduralSourceConfig(sampling="dynamic").open(where)
    task = QUD(queue_size=queue_size).build(MethodContext(teacher=teacher, student=student, seed=0))
    cfg = TrainConfig(steps=steps, batch_size=batch_size, optimizer="sgd", lr=0.05, checkpoint_every=checkpoint_every)
    cfg.tensorboard = False
    result = fit(student, task, Slow(source, delay, stop_at), cfg, work, progress=False, log_every=1)
    return {
        "model": student.state_dict(),
        "task": task.state_dict(),
        "source": source.state_dict(),
        "resumed_from": result.resumed_from,
        "world_size": result.world_size,
        "history": result.history,
    }


def ddp_distill(rank: int, world_size: int, work: Path, steps: int, stop_at: int) -> None:
    """One rank of a gloo process group (``torch.multiprocessing.spawn``) running :func:`distill` on a batch of 8.

    The run is stopped at ``stop_at`` (every rank at once), then resumed from the checkpoint rank 0 wrote; each rank
    saves its final state to ``work/rank<rank>.pt``.
    """
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{work / 'rendezvous'}", rank=rank, world_size=world_size)
    try:
        settings = {"steps": steps, "checkpoint_every": 3, "batch_size": 8, "queue_size": 12}
        try:
            distill(work / "train", stop_at=stop_at, **settings)
        except Stopped:
            pass
        torch.save(distill(work / "train", **settings), work / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    work, steps, delay, out = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
    torch.save(distill(work, steps=steps, delay=delay), out)
