"""The input/output contract a face model carries everywhere it goes, and how each file format stores it.

Input size, colour order, normalisation, alignment template, embedding size and whether the output is already
L2-normalised live here once. Checkpoints, ONNX ``metadata_props`` (:data:`CONTRACT_KEY`), OpenVINO ``rt_info``
(:data:`RT_INFO_CONTRACT`), the TensorRT ``<engine>.json`` sidecar and the release manifest all store
:meth:`ModelContract.to_dict`; preprocessing (:mod:`factory.runtime.preprocess`) is derived from it.

Readers and writers here are duck-typed over the runtime objects, so this module imports no runtime package.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from factory.files import read_json

# ONNX metadata_props keys written by factory.export.onnx.export_onnx.
CONTRACT_KEY = "factory.contract"
MODEL_NAME_KEY = "factory.model_name"
# OpenVINO rt_info paths (factory/contract, factory/model_name) written by factory.export.openvino.
RT_INFO_CONTRACT = ["factory", "contract"]
RT_INFO_MODEL_NAME = ["factory", "model_name"]

# insightface / arcface_torch 5-point template for 112x112 crops (left eye, right eye, nose, mouth left, mouth right).
ARCFACE_TEMPLATE: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


class MissingContractError(ValueError):
    """A model file (ONNX, OpenVINO IR) that carries no factory contract: its input convention must be declared."""


@dataclass(frozen=True)
class ModelContract:
    """What a model expects as input and what it returns.

    Pixels are fed as ``(x - mean) / std`` per channel on 0..255 values in ``colour_order``, NCHW float32.
    """

    input_size: tuple[int, int] = (112, 112)  # (height, width)
    colour_order: str = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    alignment_template: tuple[tuple[float, float], ...] = field(default=ARCFACE_TEMPLATE)
    embedding_dim: int = 512
    output_normalized: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelContract:
        """Inverse of :meth:`to_dict`; unknown keys are an error so a newer contract is never half-read."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"model contract has unknown keys {sorted(unknown)}")
        return cls(
            input_size=tuple(data.get("input_size", (112, 112))),
            colour_order=data.get("colour_order", "RGB"),
            mean=tuple(data.get("mean", (127.5,) * 3)),
            std=tuple(data.get("std", (127.5,) * 3)),
            alignment_template=tuple(tuple(p) for p in data.get("alignment_template", ARCFACE_TEMPLATE)),
            embedding_dim=int(data.get("embedding_dim", 512)),
            output_normalized=bool(data.get("output_normalized", False)),
        )

    def to_json(self) -> str:
        """Compact JSON, the form stored in ONNX metadata and OpenVINO rt_info."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModelContract:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def contract_from_json(text: str, where: str) -> ModelContract:
    """:meth:`ModelContract.from_json` for a contract stored in a file; a damaged one is an error naming ``where``."""
    try:
        return ModelContract.from_json(text)
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError; a wrong value type a TypeError
        raise ValueError(f"{where} is not a valid model contract ({e}) (expected ModelContract.to_json())") from None


def set_contract(model: Any, contract: ModelContract) -> None:
    """Store ``contract`` in an OpenVINO ``ov.Model``'s ``rt_info`` (``factory/contract``)."""
    model.set_rt_info(contract.to_json(), RT_INFO_CONTRACT)


def get_contract(model: Any, source: str | os.PathLike[str] = "model") -> ModelContract:
    """Read the contract from an OpenVINO ``ov.Model``'s ``rt_info``; ``source`` names the file in the error."""
    if not model.has_rt_info(RT_INFO_CONTRACT):
        raise MissingContractError(
            f"{source} has no rt_info {'/'.join(RT_INFO_CONTRACT)}, so its input contract is unknown: "
            "convert it with factory.export.openvino.convert_to_openvino (or pass the contract explicitly)"
        )
    return contract_from_json(model.get_rt_info(RT_INFO_CONTRACT).astype(str), f"{source}: rt_info factory/contract")


def engine_sidecar(engine_path: str | os.PathLike[str]) -> Path:
    """Where a TensorRT engine's contract sidecar lives: ``<engine>.json`` beside it."""
    return Path(engine_path).with_suffix(".json")


def read_engine_sidecar(engine_path: str | os.PathLike[str]) -> ModelContract:
    """Read the contract of a TensorRT engine from its ``<engine>.json`` sidecar.

    Args:
        engine_path: the serialized engine (``.engine``/``.plan``) written by
            :func:`factory.export.tensorrt.build_engine`.

    Returns:
        The :class:`ModelContract` the engine was built with.

    Raises:
        FileNotFoundError: the sidecar is missing.
        MissingContractError: the sidecar holds no ``contract``.

    """
    sidecar = engine_sidecar(engine_path)
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"{sidecar}: the engine's contract sidecar is missing; rebuild with "
            "factory.export.tensorrt.build_engine or pass contract= to tensorrt_runner"
        )
    data = read_json(sidecar)
    if not isinstance(data, dict) or "contract" not in data:
        raise MissingContractError(f"{sidecar} has no 'contract': rebuild the engine with build_engine")
    return ModelContract.from_dict(data["contract"])
