"""The shared training loop: exact resume after an interruption, schedules, and loud failure on a NaN loss."""

from pathlib import Path

import pytest
import torch
from torch import nn

from factory.models.contract import ModelContract
from factory.recipe import TrainConfig
from factory.train.loop import RESUME_FILE, NonFiniteLoss, TaskOutput, fit
from factory.train.optim import lr_factor


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.contract = ModelContract(input_size=(8, 8), embedding_dim=4)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        self.fc = nn.Linear(4 * 64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class RegressTask:
    """Regress a fixed random projection of the pixels; has a trainable parameter of its own."""

    def __init__(self) -> None:
        self.scale = nn.Parameter(torch.ones(()))

    def parameters(self) -> list[nn.Parameter]:
        return [self.scale]

    def __call__(self, model: nn.Module, batch: dict) -> TaskOutput:
        x = batch["pixels"].float() / 255
        target = x.flatten(1)[:, :4]
        loss = ((model(x) * self.scale - target) ** 2).mean()
        return TaskOutput(loss, {"mse": loss.item()})


def batches(step: int, stop_at: int | None = None) -> dict:
    if stop_at is not None and step == stop_at:
        raise KeyboardInterrupt
    g = torch.Generator().manual_seed(step)
    return {"pixels": torch.randint(0, 256, (8, 3, 8, 8), generator=g, dtype=torch.uint8)}


def train(work: Path, cfg: TrainConfig, stop_at: int | None = None) -> tuple[TinyNet, RegressTask]:
    torch.manual_seed(0)
    model, task = TinyNet(), RegressTask()
    fit(model, task, lambda s: batches(s, stop_at), cfg, work, progress=False, log_every=1)
    return model, task


def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=30, batch_size=8, optimizer="sgd", lr=0.05, checkpoint_every=10, warmup_steps=3)
    whole, whole_task = train(tmp_path / "a", cfg)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", cfg, stop_at=17)
    state = torch.load(tmp_path / "b" / RESUME_FILE, weights_only=True)
    assert state["step"] == 10  # the last checkpoint before the interruption
    resumed, resumed_task = train(tmp_path / "b", cfg)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(whole_task.scale, resumed_task.scale)


def test_lr_schedules() -> None:
    cosine = TrainConfig(steps=110, warmup_steps=10, schedule="cosine")
    assert lr_factor(0, cosine) == pytest.approx(0.1)
    assert lr_factor(9, cosine) == pytest.approx(1.0)
    assert lr_factor(10, cosine) == pytest.approx(1.0)
    assert lr_factor(60, cosine) == pytest.approx(0.5)  # halfway through the cosine
    assert lr_factor(110, cosine) == pytest.approx(0.0)
    step = TrainConfig(steps=100, schedule="step", step_every=10)
    assert [lr_factor(s, step) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]


def test_nan_loss_stops_with_a_fix(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=5, batch_size=8, optimizer="sgd", lr=1e30, checkpoint_every=100)
    with pytest.raises(NonFiniteLoss, match="lower the lr"):
        train(tmp_path, cfg)
