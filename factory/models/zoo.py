"""The model zoo: one registry for every backbone, and the factory that builds them with their contract attached.

``create_model("tinyfar_a")`` returns an ``nn.Module`` carrying ``.contract`` (its :class:`ModelContract`),
``.model_name`` and ``.model_overrides``, which is all a checkpoint needs to rebuild it.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from factory.models.catalog import CONTRACTS, MODELS, register_model


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; unknown names raise :class:`~factory.registry.UnknownNameError` with close matches."""
    model = MODELS.get(name)(**overrides)
    model.contract = CONTRACTS[name]
    model.model_name = name
    model.model_overrides = dict(overrides)
    return model


def list_models() -> list[str]:
    """Every registered model name, in natural order (iresnet18 before iresnet100)."""
    return sorted(MODELS.names(), key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])


def count_params(model: nn.Module) -> int:
    """All parameters, frozen ones included (as the reference counts do)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: tuple[int, int] = (112, 112), device: str = "cpu") -> int:
    """FLOPs of one forward pass at batch 1, counted as 2 x multiply-accumulates (the papers' convention)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, *input_size, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


def model_info(name: str) -> dict[str, Any]:
    """Size and contract of a zoo model: ``params``, ``flops`` (2 x MACs at its input size) and the input contract.

    Built on the meta device: no memory for weights, so even iresnet200 is described in a second.
    """
    with torch.device("meta"):
        model = create_model(name)
    contract = model.contract
    return {
        "name": name,
        "params": count_params(model),
        "flops": count_flops(model, contract.input_size, device="meta"),
        "input_size": list(contract.input_size),
        "embedding_dim": contract.embedding_dim,
        "colour_order": contract.colour_order,
        "mean": list(contract.mean),
        "std": list(contract.std),
        "output_normalized": contract.output_normalized,
    }


# The families register themselves into the catalog when imported: importing the zoo makes every model available.
from factory.models import iresnet, mobilefacenet, tinyfar  # noqa: E402, F401

__all__ = ["MODELS", "count_flops", "count_params", "create_model", "list_models", "model_info", "register_model"]
