"""Where and in what precision the training loop runs: a recipe's ``train.device`` and ``train.amp``.

``device`` is ``cpu`` (the default, so a build gives the same model on any machine), ``cuda`` (refused on a machine
without CUDA rather than silently trained on the CPU) or ``auto`` (CUDA when there is a device). ``amp`` runs the
forward pass under :func:`torch.autocast`: ``bf16`` (CPU or GPU) or ``fp16`` (GPU only, with a
:class:`torch.amp.GradScaler`, since fp16 gradients underflow without loss scaling). The weights, the backward pass
and the optimiser step stay in fp32 whatever the setting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch


def _cuda(label: str) -> str:
    if not torch.cuda.is_available():
        raise ValueError(
            f"{label}: train.device is 'cuda', and this machine has no CUDA device (torch.cuda.is_available() is "
            "false): set train.device to cpu, or to auto (CUDA when there is one)"
        )
    return "cuda"


# train.device -> the device type it means on this machine (given the stage's label, for the refusal)
DEVICE_TYPES: dict[str, Callable[[str], str]] = {
    "cpu": lambda label: "cpu",
    "cuda": _cuda,
    "auto": lambda label: "cuda" if torch.cuda.is_available() else "cpu",
}


def resolve_device(setting: str | torch.device, index: int = 0, label: str = "train") -> torch.device:
    """The torch device of a ``train.device`` setting (or an explicit device, returned as it is).

    Args:
        setting: ``cpu``, ``cuda`` or ``auto``, or a torch device (``"cuda:1"``) chosen by the caller.
        index: the GPU of this process (its local rank under DDP); ignored on the CPU.
        label: the training run, named in the error.

    Raises:
        ValueError: ``cuda`` on a machine without CUDA, naming ``train.device`` and the fix.
    """
    if isinstance(setting, torch.device) or setting not in DEVICE_TYPES:
        return torch.device(setting)
    kind = DEVICE_TYPES[setting](label)
    return torch.device(kind, index) if kind == "cuda" else torch.device(kind)


# What one training process takes of each device type, as a user reads it.
UNITS = {"cpu": "CPUs this process may use", "cuda": "CUDA devices"}


def capacity(setting: str, label: str = "train") -> tuple[str, int]:
    """The device type ``setting`` means here and how many training processes it holds: one per CPU, or per GPU."""
    from factory.recipe.schema import usable_cpus

    kind = DEVICE_TYPES[setting](label)
    return kind, torch.cuda.device_count() if kind == "cuda" else usable_cpus()


@dataclass(frozen=True)
class Precision:
    """One ``train.amp`` mode: the autocast dtype, whether it needs loss scaling, and the devices it runs on."""

    dtype: torch.dtype | None  # None: plain fp32, no autocast
    scaled: bool = False
    devices: tuple[str, ...] = ("cpu", "cuda")

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context the task's forward pass (and its loss) runs in; a no-op for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A loss scaler, enabled only for fp16 (a disabled one passes the loss and the step through unchanged)."""
        return torch.amp.GradScaler(device.type, enabled=self.scaled)


PRECISIONS: dict[str, Precision] = {
    "none": Precision(None),
    "bf16": Precision(torch.bfloat16),
    # fp16's 5 exponent bits underflow small gradients: the GradScaler multiplies the loss, and skips a step whose
    # gradients overflowed. The CPU's half precision is bf16.
    "fp16": Precision(torch.float16, scaled=True, devices=("cuda",)),
}


def precision_for(amp: str, device: torch.device, label: str = "train") -> Precision:
    """The :class:`Precision` of ``train.amp`` on ``device``.

    Raises:
        ValueError: fp16 on the CPU, or bf16 on a GPU without bf16 support, naming ``train.amp`` and the fix.
    """
    precision = PRECISIONS[amp]
    if device.type not in precision.devices:
        raise ValueError(
            f"{label}: train.amp is '{amp}', which runs on {' or '.join(precision.devices)} only, and this run trains "
            f"on {device.type}: use train.amp bf16 (or none) on the CPU"
        )
    if precision.dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{label}: train.amp is 'bf16', which this GPU does not support: use fp16 (or none)")
    return precision
