"""Data-parallel training: `factory build --nproc N` runs the training stages as DDP processes under torchrun.

A 2-process run is not bit-identical to a 1-process one (BatchNorm normalises each rank's slice), so what is checked
is what must hold: every rank ends with rank 0's weights, task state (QUD's queue) and source state (the re-sampling
source's pending latents and agreement), a run resumes on every rank from the checkpoint rank 0 wrote, the build
records the world size and its loss falls, and an --nproc the machine cannot run is refused before anything runs.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner
from distill_toys import ddp_distill
from helpers import DEMO_RECIPE, ROOT, TINY_BUILD

from factory.cli import EXIT_INPUT, main
from factory.recipe.schema import usable_cpus


def test_ddp_ranks_end_identical_and_resume_from_rank_0s_checkpoint(tmp_path: Path) -> None:
    steps, stop_at = 7, 5
    mp.spawn(ddp_distill, args=(2, tmp_path, steps, stop_at), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for state in ranks:
        assert state["world_size"] == 2
        assert state["resumed_from"] == 3  # the last checkpoint before the stop, on both ranks
    model_0, model_1 = (state["model"] for state in ranks)
    for key, value in model_0.items():
        assert torch.equal(value, model_1[key]), key
    # QUD's queue took the whole batch of 8 at each step (every rank's features), not each rank's 4.
    for state in ranks:
        assert state["task"]["pointer"] == (steps * 8) % 12
    assert torch.equal(ranks[0]["task"]["queue"], ranks[1]["task"]["queue"])
    # The last step (6) was a fresh one: the source holds its latents and the whole batch's agreement for step 7.
    pending = [state["source"]["pending"] for state in ranks]
    assert len(pending[0]["agreement"]) == 8
    for key in ("w", "agreement", "groups"):
        assert torch.equal(pending[0][key], pending[1][key]), key
    assert ranks[0]["history"] == ranks[1]["history"]  # the logged terms are the mean over the ranks
    assert all(math.isfinite(h["loss"]) for h in ranks[0]["history"])


def ddp_build(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """`factory build --nproc 2 --until distill` of the tiny demo recipe in a fresh process, as a user runs it."""
    cmd = [sys.executable, "-m", "factory", "build", str(DEMO_RECIPE), "--no-progress", "--until", "distill"]
    cmd += ["--nproc", "2", "--set", f"run_dir={run_dir}"]
    smaller = [
        "data.calibration.images=8",
        "teacher.train.steps=4",
        "distill.train.steps=8",
        "distill.train.warmup_steps=1",
    ]
    for item in [*TINY_BUILD, *smaller, *extra]:
        cmd += ["--set", item]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("ddp")
    return run_dir, ddp_build(run_dir)


def test_a_two_process_build_trains_with_ddp(built: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, out = built
    assert out.returncode == 0, out.stdout + out.stderr
    assert "on 2 processes" in out.stdout
    for stage, model in (("teacher", "teacher.pt"), ("distill", "student.pt")):
        (record,) = (run_dir / "stages" / stage).glob("*/stage.json")
        info = json.loads(record.read_text())
        assert info["metrics"]["world_size"] == 2
        assert info["world_size"] == 2  # in the cache key: a 1-process build trains (and caches) apart
        assert model in info["files"]
        assert not [f for f in info["files"] if f.startswith(".launch") or f == "resume.pt"]
    losses = [h["loss"] for h in info["metrics"]["history"]]
    assert len(losses) >= 2 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_a_workers_refusal_reaches_the_build_with_its_exit_code(
    built: tuple[Path, subprocess.CompletedProcess],
) -> None:
    run_dir, first = built
    assert first.returncode == 0
    out = ddp_build(run_dir, "distill.train.lr=1e30")  # data and teacher are cached: only distill launches
    assert out.returncode == EXIT_INPUT, out.stdout + out.stderr
    assert "error: distill: loss is nan at step" in out.stderr
    assert "lower the lr in the recipe" in out.stderr


def test_more_processes_than_cpus_are_refused_before_anything_runs(tmp_path: Path) -> None:
    too_many = usable_cpus() + 1
    args = ["build", str(DEMO_RECIPE), "--no-progress", "--nproc", str(too_many), "--set", f"run_dir={tmp_path}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_INPUT, result.output
    assert f"--nproc {too_many}: teacher.train.device cpu trains on cpu" in result.output
    assert f"{usable_cpus()} CPUs this process may use" in result.output
    assert not (tmp_path / "stages").exists()


def test_a_batch_that_does_not_split_over_the_processes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("factory.recipe.schema.usable_cpus", lambda: 2)  # --nproc 2 fits whatever this machine has
    args = ["build", str(DEMO_RECIPE), "--nproc", "2", "--set", f"run_dir={tmp_path}"]
    result = CliRunner().invoke(main, [*args, "--set", "distill.train.batch_size=7"])
    assert result.exit_code == EXIT_INPUT, result.output
    assert "distill.train.batch_size 7 must split evenly into 2 slices" in result.output
    assert not (tmp_path / "stages").exists()


def test_nproc_counts_gpus_for_cuda_and_refuses_cuda_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["build", str(DEMO_RECIPE), "--nproc", "2", "--set", f"run_dir={tmp_path}"]
    result = CliRunner().invoke(main, [*args, "--set", "teacher.train.device=cuda"])
    assert result.exit_code == EXIT_INPUT, result.output
    assert "teacher: train.device is 'cuda', and this machine has no CUDA device" in result.output
    assert not (tmp_path / "stages").exists()
