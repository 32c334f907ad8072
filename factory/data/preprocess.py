"""The only place where pixels become model input.

Every runtime (torch, ONNX Runtime, OpenVINO) and every stage (training, calibration, evaluation, golden inputs)
turns uint8 RGB images into model input through :func:`to_model_input`, using the model's own contract.
"""

from __future__ import annotations

import numpy as np
import torch

from factory.models.contract import ModelContract


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


def to_model_input_numpy(images: np.ndarray, contract: ModelContract) -> np.ndarray:
    """NumPy twin of :func:`to_model_input` for runtimes that take arrays."""
    return to_model_input(torch.from_numpy(np.ascontiguousarray(images)), contract).numpy()
