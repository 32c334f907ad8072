"""The only place where pixels become model input on the torch side.

Training, calibration, evaluation and golden inputs turn uint8 RGB images into model input through
:func:`to_model_input`, using the model's own contract. Runtimes that take arrays use its torch-free twin
:func:`factory.runtime.preprocess.to_model_input_numpy`, which gives bit-identical results.
"""

from __future__ import annotations

import torch

from factory.runtime.contract import ModelContract


def to_model_input(images: torch.Tensor, contract: ModelContract) -> torch.Tensor:
    """uint8 (or 0..255 float) RGB images ``N×3×H×W`` → normalised float32 model input per ``contract``."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images N×3×H×W, got shape {tuple(images.shape)}")
    if tuple(images.shape[2:]) != tuple(contract.input_size):
        raise ValueError(f"images are {tuple(images.shape[2:])}, the model expects {tuple(contract.input_size)}")
    x = images.float()
    if contract.colour_order == "BGR":
        x = x.flip(1)
    elif contract.colour_order != "RGB":
        raise ValueError(f"unsupported colour order {contract.colour_order!r} (expected 'RGB' or 'BGR')")
    mean = torch.tensor(contract.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(contract.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
