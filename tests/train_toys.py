"""A tiny model, tasks and a source that carry state, for the training-loop tests (also run in subprocesses)."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from factory.data.sources import StatelessSource
from factory.recipe import TrainConfig
from factory.runtime.contract import ModelContract
from factory.train.loop import fit
from factory.train.task import ModuleTask, TaskOutput


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.contract = ModelContract(input_size=(8, 8), embedding_dim=4)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        self.fc = nn.Linear(4 * 64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class QueueTask(ModuleTask):
    """Regress a projection of the pixels, pulled towards a FIFO queue of earlier outputs (QUD-like task state)."""

    trainable = ("scale",)

    def __init__(self, queue_size: int = 12) -> None:
        self.scale = nn.Linear(1, 1, bias=False)
        self.modules = {"scale": self.scale}
        self.queue = torch.zeros(0, 4)
        self.queue_size = queue_size

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "queue": self.queue.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.queue = state.pop("queue")
        super().load_state_dict(state)

    def __call__(self, model: nn.Module, batch: dict) -> TaskOutput:
        x = batch["pixels"].float() / 255
        out = model(x) * self.scale.weight[0, 0]
        loss = ((out - x.flatten(1)[:, :4]) ** 2).mean()
        if len(self.queue):
            loss = loss + 0.1 * ((out - self.queue.mean(0)) ** 2).mean()
        self.queue = torch.cat([self.queue, out.detach()])[-self.queue_size :]
        return TaskOutput(loss, {"mse": loss.item()}, per_sample={"agreement": out.detach().mean(1)})


class NoisyTask(QueueTask):
    """QueueTask on pixels jittered from the global generators (torch's, Python's, numpy's), as dropout or
    ElasticFace's per-sample margins draw: only a resume that restores them replays the same noise."""

    def __call__(self, model: nn.Module, batch: dict) -> TaskOutput:
        pixels = batch["pixels"].float()
        noise = 20 * torch.rand(pixels.shape) + random.uniform(-5, 5) + float(np.random.uniform(-5, 5))
        return super().__call__(model, {**batch, "pixels": (pixels + noise).clamp(0, 255)})


class Interrupted(Exception):
    """Raised by a source told to stop at a step: the run dies there, as with a crash."""


class DriftingSource(StatelessSource):
    """Batches shift with the feedback received so far (a re-sampling source's kind of state)."""

    def __init__(self, delay: float = 0.0, stop_at: int | None = None) -> None:
        self.offset = torch.zeros(())
        self.delay = delay
        self.stop_at = stop_at

    def batch(self, step: int) -> dict:
        if step == self.stop_at:
            raise Interrupted(step)
        time.sleep(self.delay)
        g = torch.Generator().manual_seed(step)
        pixels = torch.randint(0, 200, (8, 3, 8, 8), generator=g) + self.offset.round().clamp(0, 55).long()
        return {"pixels": pixels.to(torch.uint8)}

    def feedback(self, step: int, batch: dict, per_sample: dict) -> None:
        self.offset = self.offset + per_sample["agreement"].abs().mean()

    def state_dict(self) -> dict[str, Any]:
        return {"offset": self.offset.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.offset = state["offset"]


def train(
    work: Path,
    steps: int = 30,
    checkpoint_every: int = 10,
    delay: float = 0.0,
    task_type: type[QueueTask] = QueueTask,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Train from scratch (or resume from ``work``); return every piece of final state.

    Every global generator is seeded first, as a fresh process would be, so a resumed run starts from the same
    generator state as a run from scratch: only the checkpoint's saved states can put it where the run stopped.
    """
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model, task, source = TinyNet(), task_type(), DriftingSource(delay, stop_at)
    cfg = TrainConfig(
        steps=steps, batch_size=8, optimizer="sgd", lr=0.05, checkpoint_every=checkpoint_every, tensorboard=False
    )
    result = fit(model, task, source, cfg, work, progress=False, log_every=1)
    return {
        "model": model.state_dict(),
        "task": task.state_dict(),
        "source": source.state_dict(),
        "resumed_from": result.resumed_from,
    }


if __name__ == "__main__":  # python train_toys.py WORK STEPS DELAY OUT
    work, steps, delay, out = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
    torch.save(train(work, steps=steps, checkpoint_every=5, delay=delay), out)
