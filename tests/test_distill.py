"""Distillation state in flight (QUD's queue, SynthDistill's pending latents) survives SIGKILL bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from factory.train.loop import RESUME_FILE


def test_qud_queue_and_resampling_latents_survive_sigkill(tmp_path: Path) -> None:
    script = [sys.executable, str(Path(__file__).parent / "distill_toys.py")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([*script, str(tmp_path / "whole"), "22", "0", str(tmp_path / "whole.pt")], check=True, env=env)
    work = tmp_path / "killed"
    proc = subprocess.Popen([*script, str(work), "22", "0.1", str(tmp_path / "never.pt")], env=env)
    deadline = time.monotonic() + 120
    while not (work / RESUME_FILE).exists():
        assert proc.poll() is None and time.monotonic() < deadline, "distillation never wrote a checkpoint"
        time.sleep(0.02)
    time.sleep(0.15)  # past the checkpoint: killed between two steps of a fresh/re-sampled pair or mid-step
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(work / RESUME_FILE, weights_only=False)
    # checkpoint_every 5: a checkpoint after step 4 holds step 4's latents, waiting for step 5's re-sampling
    assert state["step"] % 2 == 1 and state["source"]["pending"] is not None
    assert not (state["task"]["queue"] == state["task"]["queue"][0]).all()
    subprocess.run([*script, str(work), "22", "0", str(tmp_path / "resumed.pt")], check=True, env=env)
    whole = torch.load(tmp_path / "whole.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=False)
    assert resumed["resumed_from"] >= 5
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert torch.equal(whole["task"]["queue"], resumed["task"]["queue"])
    assert whole["task"]["pointer"] == resumed["task"]["pointer"]
