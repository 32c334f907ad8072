"""The shared training loop: exact resume (task and source state included, through SIGKILL), schedules, NaN."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_toys import DriftingSource, QueueTask, TinyNet, train

from factory.recipe import TrainConfig
from factory.train.loop import RESUME_FILE, NonFiniteLoss, fit
from factory.train.optim import lr_factor


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
        fit(TinyNet(), QueueTask(), DriftingSource(), cfg, tmp_path, progress=False)


def test_a_damaged_resume_checkpoint_is_named(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=4, batch_size=8, optimizer="sgd", lr=0.01, checkpoint_every=2)
    fit(TinyNet(), QueueTask(), DriftingSource(), cfg, tmp_path, progress=False)
    resume = tmp_path / RESUME_FILE
    resume.write_bytes(resume.read_bytes()[:-100])  # cut by something outside the factory
    with pytest.raises(ValueError, match=f"{resume} is not a loadable checkpoint: truncated.*delete it to start"):
        fit(TinyNet(), QueueTask(), DriftingSource(), cfg, tmp_path, progress=False)


def assert_same_state(a: dict, b: dict) -> None:
    for part in ("model", "task", "source"):
        assert a[part].keys() == b[part].keys(), part
        for key, value in a[part].items():
            other = b[part][key]
            if isinstance(value, dict):
                assert all(torch.equal(value[k], other[k]) for k in value), f"{part}.{key}"
            else:
                assert torch.equal(value, other), f"{part}.{key}"


def test_interrupted_run_resumes_with_task_and_source_state(tmp_path: Path) -> None:
    whole = train(tmp_path / "a")

    class Stop(Exception):
        pass

    source = DriftingSource()
    original = source.batch

    def batch(step: int) -> dict:
        if step == 17:
            raise Stop
        return original(step)

    source.batch = batch
    torch.manual_seed(0)
    cfg = TrainConfig(steps=30, batch_size=8, optimizer="sgd", lr=0.05, checkpoint_every=10)
    with pytest.raises(Stop):
        fit(TinyNet(), QueueTask(), source, cfg, tmp_path / "b", progress=False)
    state = torch.load(tmp_path / "b" / RESUME_FILE, weights_only=True)
    assert state["step"] == 10 and len(state["task"]["queue"]) == 12 and state["source"]["offset"] > 0
    resumed = train(tmp_path / "b")
    assert resumed["resumed_from"] == 10
    assert_same_state(whole, resumed)
    # The state matters: resuming with a fresh queue and source would not give the same run.
    assert not torch.equal(whole["source"]["offset"], DriftingSource().state_dict()["offset"])


def test_task_state_survives_sigkill(tmp_path: Path) -> None:
    script = [sys.executable, str(Path(__file__).parent / "train_toys.py")]
    subprocess.run([*script, str(tmp_path / "whole"), "40", "0", str(tmp_path / "whole.pt")], check=True, timeout=120)
    work = tmp_path / "killed"
    proc = subprocess.Popen([*script, str(work), "40", "0.05", str(tmp_path / "never.pt")])
    deadline = time.monotonic() + 120
    while not (work / RESUME_FILE).exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training never wrote a checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "never.pt").exists()
    subprocess.run([*script, str(work), "40", "0", str(tmp_path / "resumed.pt")], check=True, timeout=120)
    whole = torch.load(tmp_path / "whole.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert resumed["resumed_from"] >= 5
    assert_same_state(whole, resumed)
