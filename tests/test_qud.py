"""QUD: the InfoNCE loss by hand, the queue's snapshot and FIFO rules, its resumable state, and its recipe section."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from train_toys import DriftingSource, TinyNet

from factory.distill.methods import DISTILL_METHODS, MethodContext
from factory.distill.methods.qud import QUD, QUDTask
from factory.recipe import RecipeError, TrainConfig, load_recipe
from factory.runtime.contract import ModelContract
from factory.train.loop import RESUME_FILE, fit


class Fixed(nn.Module):
    """A "network" whose embeddings of the next batch are set by the test (1×1 images, so any pixels do)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.contract = ModelContract(input_size=(1, 1), embedding_dim=dim)
        self.out = nn.Parameter(torch.zeros(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out.expand(len(x), -1) if len(self.out) == 1 else self.out * 1

    def set(self, rows: list[list[float]] | torch.Tensor) -> None:
        self.out = nn.Parameter(torch.as_tensor(rows, dtype=torch.float32))


def pixels(n: int) -> dict[str, torch.Tensor]:
    return {"pixels": torch.zeros(n, 3, 1, 1, dtype=torch.uint8)}


# The hand-worked case: student (3,4), (0,2) → q = (.6,.8), (0,1); teacher (1,0), (0,-5) → k = (1,0), (0,-1);
# queue rows (0,1), (1,0); τ = 0.5.
STUDENT = [[3.0, 4.0], [0.0, 2.0]]
TEACHER = [[1.0, 0.0], [0.0, -5.0]]
QUEUE = torch.tensor([[0.0, 1.0], [1.0, 0.0]])


def hand_task(queue: torch.Tensor = QUEUE, temperature: float = 0.5) -> tuple[QUDTask, Fixed]:
    teacher, student = Fixed(2), Fixed(2)
    teacher.set(TEACHER)
    student.set(STUDENT)
    task = QUDTask(teacher, temperature=temperature, queue_size=len(queue))
    task.load_state_dict({"queue": queue, "pointer": 0})
    return task, student


def infonce(logits: list[list[float]]) -> float:
    """Mean over samples of −logit₀ + log Σ exp(logits), the cross-entropy with the positive (column 0) as target."""
    return sum(-row[0] + math.log(sum(math.exp(z) for z in row)) for row in logits) / len(logits)


def test_golden_loss_by_hand() -> None:
    task, student = hand_task()
    out = task(student, pixels(2))
    # Sample 1: q·k = .6, q·Q = (.8, .6); sample 2: q·k = −1, q·Q = (1, 0); all over τ = .5.
    expected = infonce([[1.2, 1.6, 1.2], [-2.0, 2.0, 0.0]])
    assert expected == pytest.approx(2.696678, abs=1e-6)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.terms["cos"] == pytest.approx(-0.2, abs=1e-6)
    assert out.per_sample["agreement"].tolist() == pytest.approx([0.6, -1.0], abs=1e-6)
    out.loss.backward()  # the student is trained through q; the teacher stays frozen
    assert student.out.grad is not None and not student.out.grad.eq(0).all()
    assert all(p.grad is None for p in task.teacher.parameters())


def test_the_loss_uses_the_queue_before_this_batch_is_enqueued() -> None:
    task, student = hand_task()
    before = infonce([[1.2, 1.6, 1.2], [-2.0, 2.0, 0.0]])
    # Had the batch been enqueued first, the queue would be k itself: negatives q·k = (.6, −.8) and (0, −1).
    after = infonce([[1.2, 1.2, -1.6], [-2.0, 0.0, -2.0]])
    assert after != pytest.approx(before, rel=1e-3)
    assert task(student, pixels(2)).loss.item() == pytest.approx(before, rel=1e-6)
    # The batch is in the queue now, so the same batch again meets itself among the negatives.
    assert torch.allclose(task.queue, torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    assert task(student, pixels(2)).loss.item() == pytest.approx(after, rel=1e-6)


def test_fifo_order_wrap_around_and_batches_larger_than_the_queue() -> None:
    teacher, student = Fixed(3), Fixed(3)
    student.set([[1.0, 0.0, 0.0]])
    task = QUDTask(teacher, queue_size=5, seed=7)
    history = [task.queue.clone()]  # oldest first: the initial queue, written from row 0
    g = torch.Generator().manual_seed(0)
    total = 0
    for n in (2, 3, 2, 7, 1, 4, 5):  # wraps, exactly fills, and overflows the queue
        features = torch.randn(n, 3, generator=g)
        teacher.set(features)
        task(student, pixels(n))
        history.append(torch.nn.functional.normalize(features, dim=1))
        total += n
        assert task.pointer == total % 5
        # Read from the pointer (the oldest row) on, the queue is the last five teacher features in order.
        assert torch.equal(task.queue.roll(-task.pointer, 0), torch.cat(history)[-5:]), n


def test_initial_queue_is_unit_vectors_from_the_seed() -> None:
    teacher = Fixed(3)
    queue = QUDTask(teacher, queue_size=6, seed=1).queue
    assert queue.shape == (6, 3) and torch.allclose(queue.norm(dim=1), torch.ones(6))
    torch.manual_seed(123)  # the global stream plays no part
    assert torch.equal(QUDTask(teacher, queue_size=6, seed=1).queue, queue)
    assert not torch.equal(QUDTask(teacher, queue_size=6, seed=2).queue, queue)


def test_state_dict_round_trip_gives_the_same_next_loss() -> None:
    torch.manual_seed(0)
    teacher, student = TinyNet(), TinyNet()
    original = QUD(temperature=0.2, queue_size=10).build(MethodContext(teacher=teacher, student=student, seed=3))
    source = DriftingSource()
    for step in range(3):
        original(student, source.batch(step))
    state = original.state_dict()
    assert set(state) == {"queue", "pointer"} and state["pointer"] == 24 % 10
    restored = QUD(temperature=0.2, queue_size=10).build(MethodContext(teacher=teacher, student=student, seed=99))
    fresh_loss = restored(student, source.batch(3)).loss.item()
    restored.load_state_dict(state)
    loss = original(student, source.batch(3)).loss
    assert torch.equal(restored(student, source.batch(3)).loss, loss)
    assert fresh_loss != loss.item()  # the queue is what made them equal
    assert torch.equal(restored.queue, original.queue) and restored.pointer == original.pointer
    with pytest.raises(ValueError, match="queue in the state is"):
        QUD(queue_size=8).build(MethodContext(teacher=teacher, student=student, seed=3)).load_state_dict(state)


def qud_run(work: Path, stop_at: int | None = None) -> dict[str, Any]:
    """Distil a TinyNet from another with QUD for 30 steps (checkpoint every 10), or until ``stop_at`` interrupts."""
    torch.manual_seed(0)
    teacher, student = TinyNet(), TinyNet()
    task = QUD(queue_size=12).build(MethodContext(teacher=teacher, student=student, seed=5))
    source = DriftingSource()
    if stop_at is not None:
        original = source.batch

        def batch(step: int) -> dict:
            if step == stop_at:
                raise KeyboardInterrupt
            return original(step)

        source.batch = batch
    cfg = TrainConfig(steps=30, batch_size=8, optimizer="sgd", lr=0.05, checkpoint_every=10)
    result = fit(student, task, source, cfg, work, progress=False)
    return {"model": student.state_dict(), "task": task.state_dict(), "resumed_from": result.resumed_from}


def test_a_resumed_run_ends_bit_identical(tmp_path: Path) -> None:
    whole = qud_run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        qud_run(tmp_path / "b", stop_at=17)
    saved = torch.load(tmp_path / "b" / RESUME_FILE, weights_only=True)["task"]
    assert saved["pointer"] == (10 * 8) % 12
    # The saved queue is not the one a fresh task starts with: dropping it would change the resumed run.
    fresh = QUD(queue_size=12).build(MethodContext(teacher=TinyNet(), student=TinyNet(), seed=5))
    assert not torch.equal(saved["queue"], fresh.queue)
    resumed = qud_run(tmp_path / "b")
    assert resumed["resumed_from"] == 10
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert torch.equal(whole["task"]["queue"], resumed["task"]["queue"])
    assert whole["task"]["pointer"] == resumed["task"]["pointer"] == (30 * 8) % 12


def test_teacher_and_student_must_share_the_embedding_size() -> None:
    with pytest.raises(ValueError, match="4 dimensions, the student's 3"):
        QUD().build(MethodContext(teacher=Fixed(4), student=Fixed(3), seed=0))


def test_recipe_section_loads_and_temperature_zero_is_located(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("distill:\n  method:\n    kind: qud\n    temperature: 0.1\n    queue_size: 1024\n")
    method = load_recipe(path).distill.method
    assert method == QUD(temperature=0.1, queue_size=1024) and DISTILL_METHODS.get("qud") is QUD
    assert method.describe() == "QUD (InfoNCE, tau 0.1, queue 1024)"
    path.write_text("distill:\n  method:\n    kind: qud\n    temperature: 0\n    queue_size: 0\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert [str(i) for i in err.value.issues] == [
        f"{path}:4: distill.method.temperature: got 0.0 (expected a number > 0)",
        f"{path}:5: distill.method.queue_size: got 0 (expected an integer >= 1)",
    ]
