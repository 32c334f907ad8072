"""The factory's own checkpoint format, and strict, safe loading of any state_dict.

Checkpoints are plain dicts of tensors and JSON-like values, loaded with ``torch.load(weights_only=True)`` only:
a file that would need arbitrary unpickling is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from factory.files import atomic_path
from factory.runtime.contract import ModelContract

FORMAT = "factory.model/1"


class CheckpointMismatchError(ValueError):
    """A state_dict that does not fit the model, with the differences spelled out."""


def save_model(path: str | os.PathLike[str], model: nn.Module, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (built by ``create_model``) as a factory checkpoint, atomically."""
    state = {
        "format": FORMAT,
        "model_name": model.model_name,
        "overrides": dict(getattr(model, "model_overrides", {})),
        "contract": model.contract.to_dict(),
        "state_dict": {k: v.detach().contiguous() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint file safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected a model checkpoint)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path} is not a loadable checkpoint (expected tensors and plain containers only; "
            f"objects that need code to unpickle are refused): {first}"
        ) from None


def load_model(path: str | os.PathLike[str], map_location: str = "cpu") -> nn.Module:
    """Rebuild a model from a factory checkpoint: architecture, contract and weights, loaded strictly."""
    from factory.models.zoo import create_model

    state = read_checkpoint(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a factory checkpoint (expected a dict with format {FORMAT!r})")
    model = create_model(state["model_name"], **state.get("overrides", {}))
    load_state_dict_strict(model, state["state_dict"], str(path))
    model.contract = ModelContract.from_dict(state["contract"])
    return model


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load every key exactly; report missing, unexpected and mis-shaped keys instead of torch's stack trace."""
    if state_dict and all(k.startswith("module.") for k in state_dict):  # saved from DistributedDataParallel
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        name = getattr(model, "model_name", type(model).__name__)
        parts = [f"{source} does not fit model {name!r}:"]
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape differences", shapes)):
            if items:
                more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
                parts.append(f"  {len(items)} {label}: {', '.join(items[:10])}{more}")
        raise CheckpointMismatchError("\n".join(parts))
    model.load_state_dict(state_dict, strict=True)
