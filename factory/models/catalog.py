"""The catalogue every model family registers into: a builder per name and the contract its models carry.

Separate from :mod:`factory.models.zoo` so that the family modules (which register) and the zoo (which imports the
families so that they register) do not import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from factory.registry import Registry
from factory.runtime.contract import ModelContract

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
CONTRACTS: dict[str, ModelContract] = {}


def register_model(name: str, contract: ModelContract | None = None) -> Callable[[Callable[..., nn.Module]], Any]:
    """Register a builder ``(**overrides) -> nn.Module`` under ``name`` with the contract its models carry."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.register(name)(builder)
        CONTRACTS[name] = contract or ModelContract()
        return builder

    return add
