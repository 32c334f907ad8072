"""The factory's own checkpoint format, and strict, safe loading of any state_dict.

Checkpoints are plain dicts of tensors and JSON-like values, loaded with ``torch.load(weights_only=True)`` only:
a file that would need arbitrary unpickling is refused, never executed.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from factory.data.formats.verification_bin import pickle_damage
from factory.files import atomic_path
from factory.runtime.contract import ModelContract

FORMAT = "factory.model/1"
CHECKPOINT_EXPECTED = "a torch checkpoint of tensors and plain containers: a state_dict or a factory checkpoint"
# A pre-1.6 torch.save file: pickles of the magic number, protocol version, system info, the object, storage keys.
_LEGACY_PICKLES = 5


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
    """Load a checkpoint file safely (tensors and plain containers only).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, truncated, corrupt, not a torch checkpoint, or would need code to load
            (refused, never run); the message says which, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected a model checkpoint)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    # torch.load reports a damaged or foreign file with whichever of these its reader hits first.
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        KeyError,
        IndexError,
        struct.error,
        OSError,
    ) as e:
        if isinstance(e, OSError) and e.errno != errno.EINVAL:
            raise  # the machine (permissions, I/O), not the file's content; torch says EINVAL for a cut zip
        problem = checkpoint_problem(path, e)
        raise ValueError(f"{path} is not a loadable checkpoint: {problem} (expected {CHECKPOINT_EXPECTED})") from None


def checkpoint_problem(path: Path, error: BaseException) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused with ``error``, in a few words.

    Damage is judged first, from the file itself (see :func:`file_damage`): a pickle cut inside a ``GLOBAL``
    instruction reads to torch as a request for a global, so only a whole file can be said to need code, and then
    only when torch refused a global it asks for.
    """
    if path.stat().st_size == 0:
        return "empty file"
    damage = file_damage(path)
    if damage:
        return damage
    refused = _refused_global(error)
    if refused:
        return f"refused, since loading it would run code ({refused})"
    if isinstance(error, EOFError):
        return "truncated: the file ends before the data its pickle refers to"
    return f"not a torch checkpoint ({torch_error_reason(error)})"


def _refused_global(error: BaseException) -> str | None:
    """The global torch's weights-only unpickler refused, when that is why it failed."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    if found:
        return f"{found[1]} is not a tensor or plain container"
    # Reached only after an allowed global: calling or building something torch does not know.
    for phrase in ("Trying to call reduce for unrecognized function", "Can only build", "Can only create new object"):
        if phrase in str(error):
            return torch_error_reason(error)
    return None


def file_damage(path: Path) -> str | None:
    """``truncated: ...`` / ``corrupt: ...`` / ``not a torch file: ...`` from a torch file's bytes alone, or ``None``.

    torch.save and torch.jit.save write a zip archive (its table of contents at the end, every member CRC-checked)
    around a pickle, or, before torch 1.6, a run of protocol-2 pickles followed by the raw storages.
    """
    with open(path, "rb") as f:
        head = f.read(4)
        if head == b"PK\x03\x04":
            return _zip_damage(path)
        if head[:1] != pickle.PROTO:  # every pickle of protocol 2 or later, torch's included, starts with PROTO
            return "not a torch file: neither a zip archive nor a pickle"
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
        for _ in range(_LEGACY_PICKLES):
            if f.tell() >= size:
                break
            damage = pickle_damage(f)
            if damage:
                return damage
    return None


def _zip_damage(path: Path) -> str | None:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        return "truncated: the zip archive has no central directory at its end"
    with archive:
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            return f"corrupt: {e}"
        if bad is not None:
            return f"corrupt: archive member {bad} fails its CRC check"
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pickles:
            return "not a torch file: the zip archive holds no data.pkl"
        return pickle_damage(io.BytesIO(archive.read(pickles[0])))


def torch_error_reason(error: BaseException) -> str:
    """One line of a torch error: its weights-only unpickler's own words when present, else its first sentence.

    torch's file errors run to paragraphs of advice ("This is an internal miniz error. If you are seeing ...");
    the first sentence is the fact.
    """
    text = str(error).strip()
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    line = found[1] if found else (text.splitlines()[0] if text else type(error).__name__)
    return line.strip().split(". ")[0].removesuffix(".")


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
