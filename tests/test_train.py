"""The shared training loop: exact resume (task, source and RNG state, through SIGKILL), schedules, clipping, logs."""

import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers import DEMO_RECIPE
from train_toys import DriftingSource, Interrupted, NoisyTask, QueueTask, TinyNet, train

from factory.pipeline.stage import LOG_DIRS
from factory.recipe import RecipeError, TrainConfig, load_recipe
from factory.train import loop
from factory.train.loop import RESUME_FILE, NonFiniteLoss, fit
from factory.train.optim import build_optimizer, lr_factor
from factory.train.task import TaskOutput


def test_lr_schedules() -> None:
    cosine = TrainConfig(steps=110, warmup_steps=10, schedule="cosine")
    assert lr_factor(0, cosine) == pytest.approx(0.1)
    assert lr_factor(9, cosine) == pytest.approx(1.0)
    assert lr_factor(10, cosine) == pytest.approx(1.0)
    assert lr_factor(60, cosine) == pytest.approx(0.5)  # halfway through the cosine
    assert lr_factor(110, cosine) == pytest.approx(0.0)
    step = TrainConfig(steps=100, schedule="step", step_every=10)
    assert [lr_factor(s, step) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    tenth = TrainConfig(steps=100, schedule="step", step_every=10, gamma=0.1)
    assert [lr_factor(s, tenth) for s in (9, 10, 25)] == pytest.approx([1.0, 0.1, 0.01])


def test_multistep_schedule() -> None:
    multi = TrainConfig(steps=100, warmup_steps=0, schedule="multistep", milestones=[30, 60])
    factors = [lr_factor(s, multi) for s in (0, 29, 30, 59, 60, 99)]
    assert factors == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    # After the warm-up, as the other schedules; milestones count from step 0 whatever the warm-up.
    warm = TrainConfig(steps=100, warmup_steps=10, schedule="multistep", milestones=[30], gamma=0.5)
    assert [lr_factor(s, warm) for s in (0, 9, 29, 30)] == pytest.approx([0.1, 1.0, 1.0, 0.5])


def test_the_loop_takes_each_step_with_its_own_lr(tmp_path: Path) -> None:
    cfg = TrainConfig(
        steps=8, batch_size=8, lr=0.01, schedule="multistep", milestones=[3, 6], checkpoint_every=100, tensorboard=False
    )
    result = fit(TinyNet(), QueueTask(), DriftingSource(), cfg, tmp_path, progress=False, log_every=1)
    assert [h["lr"] for h in result.history] == pytest.approx([0.01] * 3 + [1e-3] * 3 + [1e-4] * 2)


def test_nesterov_reaches_sgd() -> None:
    params = list(TinyNet().parameters())
    assert build_optimizer(params, TrainConfig(nesterov=True)).param_groups[0]["nesterov"] is True
    assert build_optimizer(params, TrainConfig()).param_groups[0]["nesterov"] is False


def test_gradient_clipping_bounds_the_step_and_logs_the_norm(tmp_path: Path) -> None:
    """One plain SGD step (lr 1, no momentum, no decay) moves the weights by exactly the clipped gradient."""

    def one_step(clip: float | None, work: Path) -> tuple[float, dict]:
        torch.manual_seed(0)
        model, task = TinyNet(), QueueTask()
        params = [*model.parameters(), *task.parameters()]
        before = [p.detach().clone() for p in params]
        cfg = TrainConfig(
            steps=1, batch_size=8, lr=1.0, momentum=0.0, weight_decay=0.0, schedule="constant", grad_clip_norm=clip
        )
        result = fit(model, task, DriftingSource(), cfg, work, progress=False)
        moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before, strict=True)]).norm()
        return moved.item(), result.final_terms

    free, free_terms = one_step(None, tmp_path / "free")
    clipped, terms = one_step(1e-3, tmp_path / "clipped")
    assert "grad_norm" not in free_terms
    # The logged norm is the one before clipping: what the step would have been without it (task's scale included).
    assert terms["grad_norm"] == pytest.approx(free, rel=1e-4) and free > 1e-2
    assert clipped == pytest.approx(1e-3, rel=1e-3)


def test_a_non_finite_gradient_norm_stops_a_clipped_run(tmp_path: Path) -> None:
    class InfiniteSlope(QueueTask):
        def __call__(self, model: torch.nn.Module, batch: dict) -> TaskOutput:
            out = super().__call__(model, batch)
            # sqrt has an infinite slope at 0: the loss stays finite, its gradient does not.
            return TaskOutput(out.loss + (self.scale.weight * 0).sqrt().sum(), out.terms, out.per_sample)

    cfg = TrainConfig(steps=3, batch_size=8, grad_clip_norm=5.0, checkpoint_every=100, tensorboard=False)
    with pytest.raises(NonFiniteLoss, match="gradient norm is nan at step 0; lower the lr"):
        fit(TinyNet(), InfiniteSlope(), DriftingSource(), cfg, tmp_path, progress=False)


def test_nan_loss_stops_with_a_fix(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=5, batch_size=8, optimizer="sgd", lr=1e30, checkpoint_every=100)
    with pytest.raises(NonFiniteLoss, match="lower the lr"):
        fit(TinyNet(), QueueTask(), DriftingSource(), cfg, tmp_path, progress=False)


def test_a_nan_after_a_checkpoint_names_its_terms_and_the_last_good_checkpoint(tmp_path: Path) -> None:
    class NanAtStep(QueueTask):
        """A loss that turns NaN at step 5, after the checkpoint of step 4."""

        step = 0

        def __call__(self, model: torch.nn.Module, batch: dict) -> TaskOutput:
            out = super().__call__(model, batch)
            NanAtStep.step += 1
            poisoned = out.loss * float("nan") if NanAtStep.step == 6 else out.loss
            return TaskOutput(poisoned, {**out.terms, "probe": 0.25}, out.per_sample)

    cfg = TrainConfig(steps=8, batch_size=8, optimizer="sgd", lr=0.01, checkpoint_every=2, tensorboard=False)
    with pytest.raises(NonFiniteLoss) as stopped:
        fit(TinyNet(), NanAtStep(), DriftingSource(), cfg, tmp_path, progress=False)
    message = str(stopped.value)
    assert message.startswith("train: loss is nan at step 5; lower the lr in the recipe (terms: loss nan, ")
    assert "probe 0.25" in message
    assert message.endswith(f"the last good checkpoint is {tmp_path / RESUME_FILE} (step 4)")
    assert torch.load(tmp_path / RESUME_FILE, weights_only=False)["step"] == 4  # it is there, and good

    fresh = tmp_path / "fresh"
    NanAtStep.step = 5  # NaN on the first step: nothing saved yet
    with pytest.raises(NonFiniteLoss, match=r"no checkpoint was written before it \(train.checkpoint_every\)$"):
        fit(TinyNet(), NanAtStep(), DriftingSource(), cfg, fresh, progress=False)


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
    # This checkout's factory, not whichever one the interpreter has installed (a git worktree shares the venv).
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    whole = [*script, str(tmp_path / "whole"), "40", "0", str(tmp_path / "whole.pt")]
    subprocess.run(whole, check=True, timeout=120, env=env)
    work = tmp_path / "killed"
    proc = subprocess.Popen([*script, str(work), "40", "0.05", str(tmp_path / "never.pt")], env=env)
    deadline = time.monotonic() + 120
    while not (work / RESUME_FILE).exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training never wrote a checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "never.pt").exists()
    subprocess.run([*script, str(work), "40", "0", str(tmp_path / "resumed.pt")], check=True, timeout=120, env=env)
    whole = torch.load(tmp_path / "whole.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert resumed["resumed_from"] >= 5
    assert_same_state(whole, resumed)


def test_resume_replays_the_global_generators(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task drawing from torch's, Python's and numpy's global generators resumes bit-identically."""
    whole = train(tmp_path / "whole", task_type=NoisyTask)
    with pytest.raises(Interrupted):
        train(tmp_path / "cut", task_type=NoisyTask, stop_at=17)
    shutil.copytree(tmp_path / "cut", tmp_path / "unrestored")
    resumed = train(tmp_path / "cut", task_type=NoisyTask)
    assert resumed["resumed_from"] == 10
    assert_same_state(whole, resumed)
    # Without the saved generator states the resumed steps draw the noise of steps 0.. again: another run.
    monkeypatch.setattr(loop, "restore_rng", lambda state: None)
    unrestored = train(tmp_path / "unrestored", task_type=NoisyTask)
    assert unrestored["resumed_from"] == 10
    assert not torch.equal(whole["model"]["fc.weight"], unrestored["model"]["fc.weight"])


def test_step_time_is_split_into_data_and_compute(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=6, batch_size=8, lr=0.01, checkpoint_every=100, tensorboard=False)
    result = fit(TinyNet(), QueueTask(), DriftingSource(delay=0.02), cfg, tmp_path, progress=False)
    assert result.data_seconds >= 0.02 and result.compute_seconds > 0
    assert (result.data_seconds + result.compute_seconds) * cfg.steps <= result.seconds


class FakeWriter:
    """Stands in for torch's SummaryWriter (whose tensorboard package is optional): records what the loop writes."""

    made: list["FakeWriter"] = []

    def __init__(self, log_dir: str, purge_step: int | None = None) -> None:
        self.log_dir, self.purge_step, self.scalars, self.closed = Path(log_dir), purge_step, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_tensorboard(monkeypatch: pytest.MonkeyPatch) -> type[FakeWriter]:
    module = ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    FakeWriter.made = []
    return FakeWriter


def test_tensorboard_gets_terms_lr_and_speed_and_a_resume_purges(tmp_path: Path, fake_tensorboard: type) -> None:
    cfg = TrainConfig(steps=12, batch_size=8, lr=0.01, grad_clip_norm=5.0, checkpoint_every=6)
    with pytest.raises(Interrupted):
        fit(TinyNet(), QueueTask(), DriftingSource(stop_at=8), cfg, tmp_path, "distill", False, log_every=5)
    fit(TinyNet(), QueueTask(), DriftingSource(), cfg, tmp_path, label="distill", progress=False, log_every=5)
    first, second = fake_tensorboard.made
    assert first.log_dir == tmp_path / "tensorboard" / "distill" and first.purge_step is None and first.closed
    assert second.log_dir == first.log_dir and second.purge_step == 6 and second.closed
    tags = {"terms/loss", "terms/mse", "terms/grad_norm", "lr", "speed/images_per_second"}
    tags |= {"speed/data_seconds", "speed/compute_seconds"}
    for writer, steps in ((first, [0, 5]), (second, [10, 11])):
        assert {t for t, _, _ in writer.scalars} == tags
        assert sorted({s for _, _, s in writer.scalars}) == steps
    speed = [v for t, v, _ in first.scalars if t == "speed/images_per_second"]
    assert all(v > 0 for v in speed)


def test_tensorboard_logs_stay_out_of_downstream_cache_keys() -> None:
    assert loop.TENSORBOARD_DIR in LOG_DIRS  # a rerun's new event files must not re-run the stages after it


def test_tensorboard_off_writes_nothing(tmp_path: Path, fake_tensorboard: type) -> None:
    cfg = TrainConfig(steps=2, batch_size=8, lr=0.01, checkpoint_every=100, tensorboard=False)
    fit(TinyNet(), QueueTask(), DriftingSource(), cfg, tmp_path, progress=False)
    assert fake_tensorboard.made == []


def test_tensorboard_event_file_holds_the_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(steps=4, batch_size=8, lr=0.01, checkpoint_every=100)
    fit(TinyNet(), QueueTask(), DriftingSource(), cfg, tmp_path, label="teacher", progress=False, log_every=2)
    logs = tmp_path / "tensorboard" / "teacher"
    assert list(logs.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(logs))
    events.Reload()
    assert {"terms/loss", "terms/mse", "lr", "speed/images_per_second"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("terms/loss")] == [0, 2, 3]


def test_a_resume_with_other_training_settings_is_refused_with_the_difference(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=6, batch_size=8, optimizer="sgd", lr=0.05, checkpoint_every=2, tensorboard=False)
    with pytest.raises(Interrupted):
        fit(TinyNet(), QueueTask(), DriftingSource(stop_at=3), cfg, tmp_path, progress=False)
    changed = dataclasses.replace(cfg, lr=0.01, checkpoint_every=3)  # the cadence alone would be harmless
    with pytest.raises(ValueError, match=r"other training settings \(lr: 0\.05 -> 0\.01\).*delete it to start"):
        fit(TinyNet(), QueueTask(), DriftingSource(), changed, tmp_path, progress=False)
    resumed = fit(
        TinyNet(), QueueTask(), DriftingSource(), dataclasses.replace(cfg, checkpoint_every=3), tmp_path, progress=False
    )
    assert resumed.resumed_from == 2


class AutocastProbe(QueueTask):
    """QueueTask that records whether its forward pass ran under CPU autocast, and in which dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[bool, torch.dtype]] = set()

    def __call__(self, model: torch.nn.Module, batch: dict) -> TaskOutput:
        self.seen.add((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return super().__call__(model, batch)


def test_bf16_autocast_trains_on_the_cpu(tmp_path: Path) -> None:
    model, task = TinyNet(), AutocastProbe()
    cfg = TrainConfig(steps=30, batch_size=8, optimizer="sgd", lr=0.05, amp="bf16", checkpoint_every=10)
    cfg.tensorboard = False
    result = fit(model, task, DriftingSource(), cfg, tmp_path, progress=False, log_every=1)
    assert task.seen == {(True, torch.bfloat16)}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast casts ops, never the weights
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_fp16_is_refused_on_the_cpu(tmp_path: Path) -> None:
    # A recipe with it fails `factory check` (below); fit refuses it too, e.g. when device auto finds no GPU.
    cfg = TrainConfig(steps=2, batch_size=8, amp="fp16", device="cpu", tensorboard=False)
    with pytest.raises(ValueError, match="train: train.amp is 'fp16', which runs on cuda only.*use train.amp bf16"):
        fit(TinyNet(), QueueTask(), DriftingSource(), cfg, tmp_path, progress=False)
    with pytest.raises(RecipeError, match=r"distill\.train\.amp: fp16 with device 'cpu' \(expected bf16 or none"):
        load_recipe(DEMO_RECIPE, ["distill.train.amp=fp16"])


def test_cuda_without_a_cuda_device_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = TrainConfig(steps=2, batch_size=8, device="cuda", tensorboard=False)
    with pytest.raises(ValueError, match="distill: train.device is 'cuda', and this machine has no CUDA device"):
        fit(TinyNet(), QueueTask(), DriftingSource(), cfg, tmp_path, "distill", progress=False)
    assert not (tmp_path / RESUME_FILE).exists()
    auto = dataclasses.replace(cfg, device="auto")
    model = TinyNet()
    assert fit(model, QueueTask(), DriftingSource(), auto, tmp_path, progress=False).steps == 2
    assert next(model.parameters()).device.type == "cpu"  # auto trains on the CPU when there is no GPU


def test_a_resume_with_another_amp_is_refused(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=6, batch_size=8, optimizer="sgd", lr=0.05, checkpoint_every=2, tensorboard=False)
    with pytest.raises(Interrupted):
        fit(TinyNet(), QueueTask(), DriftingSource(stop_at=3), cfg, tmp_path, progress=False)
    bf16 = dataclasses.replace(cfg, amp="bf16")
    with pytest.raises(ValueError, match=r"other training settings \(amp: 'none' -> 'bf16'\).*delete it to start"):
        fit(TinyNet(), QueueTask(), DriftingSource(), bf16, tmp_path, progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_on_cuda(tmp_path: Path, amp: str) -> None:
    from distill_toys import Slow, Stopped, TinyFaceNet

    from factory.data.sources import ProceduralSourceConfig, SourceContext
    from factory.data.world.renderer import ProceduralFaceWorld
    from factory.distill.methods import MethodContext
    from factory.distill.methods.qud import QUD

    def run(stop_at: int | None = None) -> tuple[torch.nn.Module, loop.FitResult]:
        torch.manual_seed(0)
        teacher, student = TinyFaceNet(), TinyFaceNet()
        where = SourceContext(ProceduralFaceWorld(), batch_size=8, seed=0, split="distill", labelled=False)
        source = Slow(ProceduralSourceConfig(sampling="dynamic").open(where), 0.0, stop_at)
        task = QUD(queue_size=16).build(MethodContext(teacher=teacher, student=student, seed=0))
        cfg = TrainConfig(steps=8, batch_size=8, optimizer="sgd", lr=0.05, checkpoint_every=4, device="cuda", amp=amp)
        cfg.tensorboard = False
        return student, fit(student, task, source, cfg, tmp_path, progress=False, log_every=1)

    with pytest.raises(Stopped):
        run(stop_at=6)
    saved = torch.load(tmp_path / RESUME_FILE, weights_only=True)
    # fp16's loss scale is part of the run: a resume continues with it (a disabled bf16 scaler saves nothing).
    assert ("scale" in saved["scaler"]) == (amp == "fp16")
    student, result = run()
    assert result.resumed_from == 4
    assert next(student.parameters()).device.type == "cuda"
    assert all(math.isfinite(h["loss"]) for h in result.history)
