"""Loading the models our users already have: insightface state_dicts, safetensors, ONNX and TorchScript files.

Every loader returns an ``nn.Module`` with a ``.contract`` and a ``.model_name``, so a loaded model goes anywhere a
zoo model goes (teacher, ``factory embed``, export). Weights are read with ``torch.load(weights_only=True)`` or
safetensors only; loading into an architecture is strict and a mismatch lists the differing keys.

Black-box teachers (ONNX, TorchScript) are wrapped as modules too: their forward runs the file's own runtime without
gradients, which is all a frozen teacher needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from factory.models.checkpoint import (
    FORMAT,
    file_damage,
    load_model,
    load_state_dict_strict,
    read_checkpoint,
    torch_error_reason,
)
from factory.runtime.contract import MissingContractError, ModelContract
from factory.runtime.runners import RUNTIMES, SUFFIX_RUNTIMES, load_runner, torch_runner

Normalization = Literal["arcface", "legacy128"]
# insightface's current arcface_torch feeds (x - 127.5) / 127.5; older MXNet ports and "nizhib" checkpoints / 128.
NORMALIZATIONS: dict[str, tuple[float, float]] = {"arcface": (127.5, 127.5), "legacy128": (127.5, 128.0)}
# safetensors refuses headers over 100 MB: a larger length field means a foreign file, not a truncated one.
_SAFETENSORS_MAX_HEADER = 100_000_000


def with_normalization(contract: ModelContract, normalization: Normalization) -> ModelContract:
    """``contract`` with the mean/std of an insightface normalisation convention."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r} (expected one of {', '.join(NORMALIZATIONS)})")
    mean, std = NORMALIZATIONS[normalization]
    return dataclasses.replace(contract, mean=(mean,) * 3, std=(std,) * 3)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: a plain state_dict (``.pth``/``.pt``), safetensors or a factory checkpoint.

    Common wrappers (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped; a ``module.`` prefix is removed
    when the strict load happens.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file (expected a state_dict .pth/.pt or .safetensors)")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    state = read_checkpoint(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        return state["state_dict"]
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and _all_tensors(state[key]):
            return state[key]
    if isinstance(state, dict) and state and _all_tensors(state):
        return state
    raise ValueError(
        f"{path} holds no state_dict (expected a mapping of parameter names to tensors, "
        f"got {type(state).__name__} with keys {list(state)[:5] if isinstance(state, dict) else '-'})"
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        problem = _safetensors_damage(path) or f"not a readable safetensors file ({e})"
        raise ValueError(f"{path}: {problem} (expected a safetensors file of tensors)") from None


def _safetensors_damage(path: Path) -> str | None:
    """``empty file`` / ``truncated: ...`` from the layout: an 8-byte header length, the JSON header, the tensors.

    The header records where every tensor ends, so a file shorter than that was cut off.
    """
    size = path.stat().st_size
    if size == 0:
        return "empty file"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"truncated: {size} bytes, shorter than the 8-byte header length"
        (header_size,) = struct.unpack("<Q", head)
        if header_size > _SAFETENSORS_MAX_HEADER:
            return None  # not a safetensors file at all: its own message says "header too large"
        if 8 + header_size > size:
            return f"truncated: the header announces {header_size} bytes but the file ends after {size - 8}"
        try:
            header = json.loads(f.read(header_size))
            end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError):
            return None  # a damaged header: safetensors' own message says how
    if 8 + header_size + end > size:
        return f"truncated: the tensors end at byte {8 + header_size + end} but the file at byte {size}"
    return None


def _all_tensors(d: dict[Any, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def load_backbone(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    normalization: Normalization | None = None,
    **overrides: Any,
) -> nn.Module:
    """A zoo architecture with weights from any supported weights file, loaded strictly.

    Args:
        name: zoo name (``iresnet50``, ``mbf``, ...).
        weights: weights file; ``None`` keeps the fresh initialisation.
        normalization: the input convention the weights were trained with (``arcface`` or ``legacy128``);
            ``None`` keeps the architecture's default (a factory checkpoint's own contract wins).
        **overrides: architecture overrides passed to ``create_model``.
    """
    from factory.models.zoo import create_model

    if weights is not None and _is_factory_checkpoint(weights):
        model = load_model(weights)
        if model.model_name != name:
            raise ValueError(f"{weights} is a factory checkpoint of {model.model_name!r}, not {name!r}")
    else:
        model = create_model(name, **overrides)
        if weights is not None:
            load_state_dict_strict(model, read_state_dict(weights), str(weights))
    if normalization is not None:
        model.contract = with_normalization(model.contract, normalization)
    return model


def _is_factory_checkpoint(path: str | os.PathLike[str]) -> bool:
    path = Path(path)
    if path.suffix == ".safetensors":
        return False
    state = read_checkpoint(path)
    return isinstance(state, dict) and state.get("format") == FORMAT


class RunnerModule(nn.Module):
    """A frozen black-box model (ONNX, OpenVINO, TensorRT) behind an ``nn.Module`` forward.

    Input is the normalised float tensor a torch model would get; the output is a float tensor on the input's device.
    """

    def __init__(self, runner: Any, name: str) -> None:
        super().__init__()
        self.runner = runner
        self.contract = runner.contract
        self.model_name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings from the wrapped runtime (no gradient flows through a black box)."""
        out = self.runner(np.ascontiguousarray(x.detach().float().cpu().numpy()))
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


class TorchScriptModule(nn.Module):
    """A TorchScript file with a declared contract."""

    def __init__(self, path: Path, contract: ModelContract) -> None:
        super().__init__()
        try:
            with warnings.catch_warnings():
                # torch deprecates TorchScript in favour of torch.export; users' TorchScript teachers stay supported,
                # and the warning (two lines on every load) is nothing they can act on here.
                warnings.simplefilter("ignore", FutureWarning)
                self.scripted = torch.jit.load(str(path), map_location="cpu")
        # torch.jit.load raises RuntimeError for every unreadable archive; what is wrong is read from the file.
        except (RuntimeError, ValueError) as e:
            problem = file_damage(path) or f"not a TorchScript archive ({torch_error_reason(e)})"
            raise ValueError(f"{path}: {problem} (expected a TorchScript archive written by torch.jit.save)") from None
        self.contract = contract
        self.model_name = path.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The scripted model's output (its first output if it returns several)."""
        out = self.scripted(x.contiguous())
        return out[0] if isinstance(out, (tuple, list)) else out


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """TorchScript archives are zips with a ``code/`` folder; ``torch.save`` zips have none."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_any_model(
    path: str | os.PathLike[str],
    model: str | None = None,
    normalization: Normalization | None = None,
    contract: ModelContract | None = None,
    threads: int = 1,
) -> nn.Module:
    """Load whatever the user has as a module with a contract.

    - ``.onnx``/``.ort`` / ``.xml`` / ``.engine``: a :class:`RunnerModule` over ONNX Runtime / OpenVINO / TensorRT; the
      contract is read from the file when the factory exported it, else ``contract`` (default: arcface).
    - TorchScript (``.ts``/``.torchscript``/``.jit``, or any TorchScript archive): :class:`TorchScriptModule`.
    - a factory checkpoint: as saved.
    - a plain state_dict or safetensors file: into the zoo architecture ``model``, strictly.

    ``normalization`` declares the input convention (``legacy128`` for older insightface ports).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    if path.suffix in SUFFIX_RUNTIMES:
        try:
            runner = load_runner(path, threads=threads, contract=contract)
        except MissingContractError:  # a foreign file: nothing declared, so insightface's arcface convention
            runner = load_runner(path, threads=threads, contract=ModelContract())
        module: nn.Module = RunnerModule(runner, path.name)
    elif path.suffix in (".ts", ".torchscript", ".jit") or is_torchscript(path):
        module = TorchScriptModule(path, contract or ModelContract())
    elif _is_factory_checkpoint(path):
        module = load_model(path)
    else:
        if model is None:
            raise ValueError(
                f"{path} holds bare weights: name the architecture they belong to "
                "(e.g. teacher.model: iresnet50 in a recipe, or --model iresnet50)"
            )
        module = load_backbone(model, path)
    if normalization is not None:
        module.contract = with_normalization(module.contract, normalization)
    return module


def model_runner(
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    artifact: str | os.PathLike[str] | None = None,
    normalization: Normalization | None = None,
    threads: int = 1,
) -> Any:
    """A :class:`~factory.runtime.runners.Runner` for a zoo model (``model`` [+ ``weights``]) or an ``artifact``.

    Exactly one of ``model`` and ``artifact`` must be given; black-box artifacts keep their own runtime.
    """
    if (model is None) == (artifact is None):
        raise ValueError("give exactly one of a model name (with optional weights) or an artifact file")
    if artifact is not None:
        module = load_any_model(artifact, normalization=normalization, threads=threads)
    else:
        module = load_backbone(model, weights, normalization=normalization)
    return module.runner if isinstance(module, RunnerModule) else torch_runner(module.eval(), threads=threads)


@RUNTIMES.register("torch")
def torch_file_runner(
    path: str | os.PathLike[str], threads: int = 1, contract: ModelContract | None = None, **options: Any
) -> Any:
    """The ``torch`` runtime: any model file :func:`load_any_model` reads, run as a torch module.

    Registered here rather than in :mod:`factory.runtime` because reading checkpoints needs the model zoo; the
    torch-free runtime layer only knows the name.
    """
    if options:
        raise TypeError(f"the torch runtime takes no options, got {sorted(options)}")
    return torch_runner(load_any_model(path, contract=contract, threads=threads).eval(), threads=threads)


def load_teacher(built: Any) -> nn.Module:
    """A teacher artifact (a :class:`~factory.pipeline.stage.BuiltArtifact`) as a frozen-ready module.

    A factory checkpoint is rebuilt; a black-box file is wrapped with the contract its artifact record declares.
    """
    artifact = built.artifact
    contract = ModelContract.from_dict(artifact.contract) if artifact.contract else None
    return load_any_model(built.path, contract=contract)
