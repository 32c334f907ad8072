"""Compressors, registered by ``kind``: each derives a smaller or faster artifact from one the build already has.

A recipe lists them, ``compress.methods: [{kind: openvino_ptq}, {kind: onnx_ptq}]``; the registered object is that
entry's config dataclass, and its ``compress`` writes the new files and returns their
:class:`~factory.runtime.artifacts.Artifact` record, ``derived_from`` its parent. The compress stage measures every
result against its parent on held-out faces; validation and the gates then treat it like any other artifact. A
compressor may return several artifacts (QAT writes an INT8 IR and a Q/DQ ONNX from one fine-tune).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from factory.compress.ptq import PTQSettings, quantize_onnx, quantize_openvino
from factory.registry import Registry
from factory.runtime.artifacts import Artifact

Fail = Callable[[str, str], None]
COMPRESSORS: Registry[type] = Registry("compressor")
# INT8 kernels and rounding differ between CPUs more than FP32 ones: the golden check on a target is looser.
INT8_GOLDEN_MIN_COSINE = 0.99


@dataclass
class CompressContext:
    """What a compressor works from, and what it reports back (``notes``: recorded with the method)."""

    parents: dict[str, Any]  # the build's artifacts so far, by name (BuiltArtifact: record + directory)
    calibration: np.ndarray  # normalised float32 N×3×H×W faces of data.calibration (never benchmark faces)
    work_dir: Path
    world: Any = None  # the recipe's procedural world (training compressors draw faces from it)
    seed: int = 0
    progress: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class NNCFPTQ(PTQSettings):
    """NNCF post-training INT8 quantization on synthetic calibration faces (QuantFace), the base of its compressors.

    Its recipe keys are :class:`~factory.compress.ptq.PTQSettings`' fields, whose defaults were measured best for
    fidelity; the entry itself is the quantizer's settings.
    """

    kind: str = "nncf_ptq"

    def parent(self, ctx: CompressContext, name: str, export_kind: str) -> Any:
        """The FP32 artifact this method quantizes, or a recipe error naming the export it needs."""
        if name not in ctx.parents:
            raise ValueError(
                f"compress.methods: {self.kind} quantizes the {name} artifact: list {{kind: {export_kind}}} in "
                "export.formats"
            )
        return ctx.parents[name]


@COMPRESSORS.register("openvino_ptq")
@dataclass
class OpenVINOPTQ(NNCFPTQ):
    """NNCF PTQ of the OpenVINO FP32 IR to an INT8 IR that OpenVINO runs with INT8 kernels."""

    kind: str = "openvino_ptq"

    def compress(self, ctx: CompressContext) -> Artifact:
        """Write ``student_int8.xml/.bin``."""
        parent = self.parent(ctx, "openvino_fp32", "openvino")
        quantize_openvino(parent.path, ctx.work_dir / "student_int8.xml", ctx.calibration, self)
        return Artifact(
            "openvino_int8",
            ("student_int8.xml", "student_int8.bin"),
            "openvino",
            precision="int8",
            derived_from=parent.name,
            golden_min_cosine=INT8_GOLDEN_MIN_COSINE,
            options={"precision": "f32"},  # the non-quantized ops run in FP32, as when it was measured
        )


@COMPRESSORS.register("onnx_ptq")
@dataclass
class OnnxPTQ(NNCFPTQ):
    """NNCF PTQ of the ONNX FP32 model to a Q/DQ INT8 ONNX model (ONNX Runtime runs it, TensorRT builds it)."""

    kind: str = "onnx_ptq"
    # ONNX Runtime's Q/DQ kernels kept embeddings closer with full 8-bit weights after the first layer
    overflow_fix: Literal["enable", "first_layer", "disable"] = "first_layer"

    def compress(self, ctx: CompressContext) -> Artifact:
        """Write ``student_int8.onnx``."""
        parent = self.parent(ctx, "onnx_fp32", "onnx")
        quantize_onnx(parent.path, ctx.work_dir / "student_int8.onnx", ctx.calibration, self)
        return Artifact(
            "onnx_int8",
            ("student_int8.onnx",),
            "onnxruntime",
            precision="int8",
            derived_from=parent.name,
            golden_min_cosine=INT8_GOLDEN_MIN_COSINE,
        )
