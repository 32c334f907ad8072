"""Fairness-adaptive group balance: more of each fresh batch to the groups the student matches the teacher worst on.

Kept apart from :mod:`factory.data.sources` so the sources built on it (the procedural one, the real/synthetic mix)
import it without importing each other.
"""

from __future__ import annotations

from typing import Any

import torch

AGREEMENT_DECAY = 0.9  # of the running per-group agreement: about the last ten batches count


def balance_shares(agreement: torch.Tensor, strength: float) -> torch.Tensor:
    """Each group's share of a batch from its student-teacher agreement: the adaptive group-balance rule.

    ``share_g = 1/(2G) + ½·softmax(strength·(1 − agreement))_g`` for ``G`` groups: half of the batch is dealt
    equally, the other half in proportion to ``exp(strength·(1 − agreement_g))``, so the groups the student
    matches the teacher worst on get more. Equal agreements give equal shares ``1/G``, and no group ever gets less
    than ``1/(2G)``: a group the student already does well on is still seen, never starved.
    """
    agreement = torch.as_tensor(agreement, dtype=torch.float64)
    groups = len(agreement)
    return 0.5 / groups + 0.5 * torch.softmax(strength * (1.0 - agreement), dim=0)


class GroupBalancer:
    """Fairness-adaptive group balance: a running per-group agreement, and the shares of the next fresh batch.

    Every batch's per-sample ``agreement`` (fed back by the training loop) updates each group's running mean
    (an EMA with decay :data:`AGREEMENT_DECAY`; a group's first batch sets it). The shares are
    :func:`balance_shares` of it, a group not seen yet counting as the mean of the seen ones (neither favoured
    nor starved). The running means are the source's state, so a resumed run draws the same batches.
    """

    def __init__(self, groups: int, strength: float) -> None:
        if strength <= 0:
            raise ValueError(f"adaptive_strength must be > 0, got {strength}")
        self.strength = float(strength)
        self.agreement = torch.zeros(groups, dtype=torch.float64)
        self.seen = torch.zeros(groups, dtype=torch.bool)

    def shares(self) -> torch.Tensor:
        """Each group's share of the next fresh batch (sums to 1)."""
        neutral = self.agreement[self.seen].mean() if bool(self.seen.any()) else torch.tensor(0.0, dtype=torch.float64)
        return balance_shares(torch.where(self.seen, self.agreement, neutral), self.strength)

    def feedback(self, batch: dict[str, Any], per_sample: dict[str, torch.Tensor]) -> None:
        """Fold one batch's per-sample agreement into each group's running mean."""
        if "agreement" not in per_sample:
            raise ValueError(
                "group_balance: adaptive needs the per-sample student-teacher agreement, and this distillation "
                "method reports none: use group_balance: equal"
            )
        groups = batch["groups"].detach().cpu().long()
        agreement = per_sample["agreement"].detach().cpu().double()
        n = len(self.agreement)
        count = torch.bincount(groups, minlength=n)
        mean = torch.zeros(n, dtype=torch.float64).index_add_(0, groups, agreement) / count.clamp_min(1)
        updated = torch.where(self.seen, AGREEMENT_DECAY * self.agreement + (1 - AGREEMENT_DECAY) * mean, mean)
        present = count > 0
        self.agreement = torch.where(present, updated, self.agreement)
        self.seen = self.seen | present

    def state_dict(self) -> dict[str, Any]:
        """The running agreement per group and which groups have been seen."""
        return {"agreement": self.agreement.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; another number of groups belongs to another world and is refused."""
        if set(state) != {"agreement", "seen"}:
            raise ValueError(f"group balance state holds {sorted(state)}, expected ['agreement', 'seen']")
        if state["agreement"].shape != self.agreement.shape or state["seen"].shape != self.seen.shape:
            raise ValueError(
                f"group balance state is for {len(state['agreement'])} groups, this world has {len(self.agreement)}"
            )
        self.agreement = state["agreement"].to(torch.float64).clone()
        self.seen = state["seen"].to(torch.bool).clone()
