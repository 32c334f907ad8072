"""Pixels to model input in pure numpy, and the check every runner applies to its input.

:func:`to_model_input_numpy` is the torch-free twin of :func:`factory.data.preprocess.to_model_input` and must stay
bit-identical to it: the release's golden input is made on the build machine and checked on targets without torch,
so both compute ``(x - mean) / std`` in float32 with float32 ``mean``/``std``, which IEEE arithmetic rounds the same
way in numpy and torch.
"""

from __future__ import annotations

import numpy as np

from factory.runtime.contract import ModelContract


def to_model_input_numpy(images: np.ndarray, contract: ModelContract) -> np.ndarray:
    """uint8 (or 0..255 float) RGB images ``N×3×H×W`` → normalised float32 model input per ``contract``.

    Args:
        images: RGB images, channels first, at the contract's input size.
        contract: the model's contract (colour order, mean, std, input size).

    Returns:
        A new C-contiguous float32 array ``N×3×H×W``.

    Raises:
        ValueError: wrong shape or size, or a colour order other than RGB/BGR.

    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images N×3×H×W, got shape {tuple(images.shape)}")
    if tuple(images.shape[2:]) != tuple(contract.input_size):
        raise ValueError(f"images are {tuple(images.shape[2:])}, the model expects {tuple(contract.input_size)}")
    x = images.astype(np.float32)
    if contract.colour_order == "BGR":
        x = x[:, ::-1]
    elif contract.colour_order != "RGB":
        raise ValueError(f"unsupported colour order {contract.colour_order!r} (expected 'RGB' or 'BGR')")
    mean = np.asarray(contract.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(contract.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return (x - mean) / std


def check_model_input(x: np.ndarray, contract: ModelContract, kind: str) -> np.ndarray:
    """Validate a runner's input and return it as a C-contiguous float32 array; wrong input raises precisely.

    Args:
        x: normalised model input ``N×3×H×W``.
        contract: the runner's contract (its input size).
        kind: what is being fed (a runner kind, or e.g. ``"calibration"``), named in the error.

    Returns:
        ``x`` as C-contiguous float32 (no copy when it already is).

    Raises:
        TypeError: not a numpy array, or raw uint8 images.
        ValueError: wrong shape.

    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{kind} runner expects a numpy array, got {type(x).__name__}")
    if x.dtype == np.uint8:
        raise TypeError(
            f"{kind} runner got uint8 images; it takes normalised float32 input: wrap it with "
            "factory.runtime.runners.embed_uint8(runner) to feed raw images"
        )
    expected = (3, *contract.input_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"{kind} runner expects input N×{'×'.join(map(str, expected))}, got {tuple(x.shape)}")
    return np.ascontiguousarray(x, dtype=np.float32)
