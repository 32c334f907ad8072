"""The input/output contract a face model carries everywhere it goes.

Input size, colour order, normalisation, alignment template, embedding size and whether the output is already
L2-normalised live here once. Checkpoints, ONNX ``metadata_props``, OpenVINO ``rt_info`` and the release manifest
all store :meth:`ModelContract.to_dict`; preprocessing (:mod:`factory.data.preprocess`) is derived from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

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
