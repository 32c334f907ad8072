"""SynthDistill's dynamic re-sampling: a latent source that moves each sample by how well the student already does.

SynthDistill (seed 002, REFERENCE.md §4) alternates two steps. Step 1 samples fresh latents ``z``, maps them to
``w``, renders and distills. Step 2 takes step 1's ``w`` and each sample's student-teacher agreement
``s = (cos(student, teacher) + 1) / 2`` and renders ``w' = w + c·s·ε``, ``ε ~ N(0, I)``: samples the student already
matches jump further (new, more informative faces), hard ones stay near (the student gets another look at a
neighbour of what it got wrong). ``c`` is the recipe's ``resample_scale`` (the paper's 1).

In a StyleGAN ``W`` the paper adds ``ε`` as is, broadcast over the synthesis layers (``ws`` are ``N×layers×w_dim``;
one ``ε`` per sample, not per layer). The procedural world's ``w`` is ``mean_g + spread_g · u`` with ``u ~ N(0, I)``,
coordinates in renderer units: an unscaled ``ε`` there is larger than the distance between two identities and
pushes a face out of its group, so ``ε`` is scaled by the group's spread (``w_spread``): the jump is then ``c·s``
times a typical identity's distance from the group mean, and the face stays one of its group.

Step 2 needs step 1's agreement, which the training loop hands back through ``feedback``; the pending ``w``, groups
and agreement are the source's state, so a run interrupted between the two steps resumes with them.

With an adaptive group balance (``factory.data.sources.GroupBalancer``) only step 1 draws group counts from it; step
2 keeps step 1's groups. The balancer learns from both steps' feedback, and its state travels with the pending step.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from factory.data.world.seeding import make_generator


class LatentFaces(Protocol):
    """Fresh faces with their latents, and faces rendered from given latents: what re-sampling wraps."""

    def fresh(self, step: int) -> dict[str, Any]:
        """The static batch of ``step``: ``pixels``, ``w`` and, where the source has groups, ``groups``."""
        ...

    def render(self, w: Tensor, groups: Tensor | None, generator: torch.Generator) -> Tensor:
        """uint8 faces of latents ``w`` (nuisances drawn from ``generator``)."""
        ...

    def spread(self, groups: Tensor | None) -> Tensor | float:
        """Scale of ``ε`` per sample and coordinate (broadcastable to ``w`` without its layer axis)."""
        ...


class Balancer(Protocol):
    """What adapts the fresh batches' group counts to the feedback (``factory.data.sources.GroupBalancer``)."""

    def feedback(self, batch: dict[str, Any], per_sample: dict[str, Tensor]) -> None:
        """Learn from one batch's per-sample values."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What must survive a resume."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        ...


class DynamicResampling:
    """Even steps render fresh latents; odd steps re-render the previous step's, moved by ``c·s·ε``.

    ``balancer`` is the faces' adaptive group balance, if any: it gets every step's feedback and its state is kept
    with this source's.
    """

    def __init__(
        self, faces: LatentFaces, scale: float, seed: int, split: str, balancer: Balancer | None = None
    ) -> None:
        if scale <= 0:
            raise ValueError(f"resample_scale must be > 0, got {scale}")
        self.faces, self.scale, self.seed, self.split = faces, float(scale), seed, split
        self.balancer = balancer
        self._pending: dict[str, Tensor] | None = None  # step 1's w, groups and agreement, waiting for step 2

    def batch(self, step: int) -> dict[str, Any]:
        """The batch of ``step``; ``resampled`` says which of the two kinds it is."""
        if step % 2 == 0:
            batch = self.faces.fresh(step)
            return {**batch, "resampled": torch.zeros(len(batch["pixels"]), dtype=torch.bool)}
        if self._pending is None:
            raise RuntimeError(
                f"re-sampling step {step} has no agreement from step {step - 1}: the distillation method must "
                "report a per-sample 'agreement' (feature_kd and qud do)"
            )
        pending, self._pending = self._pending, None
        w, groups, agreement = pending["w"], pending.get("groups"), pending["agreement"]
        gen = make_generator("resample", self.seed, self.split, step)
        moved = resample_w(w, agreement, self.faces.spread(groups), self.scale, gen)
        out = {"pixels": self.faces.render(moved, groups, gen), "w": moved}
        if groups is not None:
            out["groups"] = groups
        out["resampled"] = torch.ones(len(moved), dtype=torch.bool)
        return out

    def feedback(self, step: int, batch: dict[str, Any], per_sample: dict[str, Tensor]) -> None:
        """After a fresh step, keep its latents and the student-teacher agreement for the next step."""
        if self.balancer is not None:  # both kinds of step measure how the student does on each group
            self.balancer.feedback(batch, per_sample)
        if step % 2:
            return
        if "agreement" not in per_sample:
            raise ValueError(
                "dynamic re-sampling needs the per-sample student-teacher agreement, and this distillation method "
                "reports none: use sampling: static"
            )
        pending = {"w": batch["w"].detach().cpu(), "agreement": per_sample["agreement"].detach().float().cpu()}
        if batch.get("groups") is not None:
            pending["groups"] = batch["groups"].detach().cpu()
        self._pending = pending

    def state_dict(self) -> dict[str, Any]:
        """The pending step-1 latents (None between pairs of steps), and the balancer's state if there is one."""
        state: dict[str, Any] = {"pending": None if self._pending is None else dict(self._pending)}
        if self.balancer is not None:
            state["balance"] = self.balancer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        expected = {"pending"} if self.balancer is None else {"pending", "balance"}
        if set(state) != expected:
            raise ValueError(f"re-sampling state holds {sorted(state)}, expected {sorted(expected)}")
        self._pending = None if state["pending"] is None else dict(state["pending"])
        if self.balancer is not None:
            self.balancer.load_state_dict(state["balance"])


def resample_w(w: Tensor, agreement: Tensor, spread: Tensor | float, scale: float, gen: torch.Generator) -> Tensor:
    """``w + c·s·spread·ε`` with ``s = (agreement + 1) / 2`` and one ``ε ~ N(0, I)`` per sample, shared by all layers.

    ``w`` is ``N×w_dim`` (procedural) or ``N×layers×w_dim`` (StyleGAN ``ws``); ``spread`` broadcasts to ``N×w_dim``.
    """
    n, dim = w.shape[0], w.shape[-1]
    eps = torch.randn(n, dim, generator=gen)
    s = ((agreement.float().clamp(-1.0, 1.0) + 1.0) / 2.0).view(n, 1)
    step = scale * s * torch.as_tensor(spread, dtype=torch.float32) * eps
    if w.ndim == 3:  # StyleGAN ws: the same move for every synthesis layer (W, not W+)
        step = step[:, None, :]
    return w + step.to(w.dtype)
