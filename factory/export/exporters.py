"""Exporters, registered by ``kind``: each turns the torch student (or an artifact exported before it) into a file.

A recipe lists them in order, ``export.formats: [{kind: onnx, opset: 18}, {kind: openvino}]``; the registered object
is that entry's config dataclass, and its ``export`` writes the file and returns the
:class:`~factory.runtime.artifacts.Artifact` record. The export stage checks every result against torch (parity)
before anything downstream sees it. A new format is one more registered class, in this file or its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from factory.export.onnx import export_onnx
from factory.export.openvino import compress_ir_to_fp16, convert_to_openvino
from factory.export.ort_mobile import convert_to_ort
from factory.recipe.schema import between
from factory.registry import Registry
from factory.runtime.artifacts import Artifact

Fail = Callable[[str, str], None]
EXPORTERS: Registry[type] = Registry("exporter")
# Golden embeddings are re-checked on other machines, where kernels may differ slightly.
FP32_GOLDEN_MIN_COSINE = 0.9999
# FP16 weights computed in FP32 (the f32 hint) barely move an embedding (cosine 1.0000000 to torch in
# tests/test_export.py); a target that computes in FP16 moves it more, hence the looser golden tolerance.
FP16_GOLDEN_MIN_COSINE = 0.999


@dataclass
class ExportContext:
    """What an exporter works from: the torch student, where to write and what was exported before it."""

    model: Any  # the torch student in eval mode, with its contract
    work_dir: Path
    made: dict[str, Artifact]  # earlier exporters' artifacts in this stage, by name (files relative to work_dir)
    source: str  # the torch student's artifact name

    def onnx_export(self, kind: str) -> Artifact:
        """The ONNX FP32 artifact that exporter ``kind`` converts; a recipe listing ``kind`` before it is refused."""
        if "onnx_fp32" not in self.made:
            raise ValueError(f"export.formats: {kind} converts the ONNX export: list {{kind: onnx}} before it")
        return self.made["onnx_fp32"]


def writable_opsets() -> tuple[int, int]:
    """The ONNX opsets that the installed torch's exporter (``dynamo=True``) writes: ``(lowest, highest)``.

    The lowest is the opset its op library is written in: below it torch tries a version conversion, which fails
    for our models (torch 2.14 writes 18 and export_onnx refuses the mismatch). The highest is the newest opset torch
    declares. Both are private constants, read when a recipe is checked so that a torch upgrade moves the range.
    """
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
        from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET
    except ImportError:  # the constants moved: only the opset this code was verified with is known to work
        return 18, 18
    return int(TORCHLIB_OPSET), int(ONNX_MAX_OPSET)


@EXPORTERS.register("onnx")
@dataclass
class OnnxExport:
    """ONNX FP32 with a dynamic batch axis and the contract in its metadata (ONNX Runtime; TensorRT on the target)."""

    kind: str = "onnx"
    opset: int = field(
        default=18,
        metadata=between(
            ge=lambda: writable_opsets()[0],
            le=lambda: writable_opsets()[1],
            note="the opsets torch's ONNX exporter writes",
        ),
    )

    def export(self, ctx: ExportContext) -> Artifact:
        """Write ``student.onnx``."""
        export_onnx(ctx.model, ctx.work_dir / "student.onnx", opset=self.opset)
        return Artifact(
            "onnx_fp32",
            ("student.onnx",),
            "onnxruntime",
            derived_from=ctx.source,
            golden_min_cosine=FP32_GOLDEN_MIN_COSINE,
        )


@EXPORTERS.register("openvino")
@dataclass
class OpenVINOExport:
    """OpenVINO IR FP32, converted from the ONNX export (list ``onnx`` before it)."""

    kind: str = "openvino"

    def export(self, ctx: ExportContext) -> Artifact:
        """Write ``student_fp32.xml/.bin`` from the ONNX artifact."""
        onnx = ctx.onnx_export("openvino")
        convert_to_openvino(ctx.work_dir / onnx.files[0], ctx.work_dir / "student_fp32.xml", ctx.model.contract)
        return Artifact(
            "openvino_fp32",
            ("student_fp32.xml", "student_fp32.bin"),
            "openvino",
            derived_from=onnx.name,
            golden_min_cosine=FP32_GOLDEN_MIN_COSINE,
            # On AMX/AVX512-BF16 CPUs the plugin runs bf16 unless told otherwise: FP32 means the f32 hint.
            options={"precision": "f32"},
        )


@EXPORTERS.register("openvino_fp16")
@dataclass
class OpenVINOFP16Export:
    """OpenVINO IR with FP16 weights, from the FP32 IR (list ``openvino`` before it).

    Half the file for devices that compute in FP16 (GPUs, NPUs, ARM CPUs with FP16 arithmetic); x86 CPUs decompress
    the weights and compute in FP32 (the f32 hint), so there it is a smaller file with FP32 accuracy.
    """

    kind: str = "openvino_fp16"

    def export(self, ctx: ExportContext) -> Artifact:
        """Write ``student_fp16.xml/.bin``; the contract travels in the IR's rt_info."""
        if "openvino_fp32" not in ctx.made:
            raise ValueError("export.formats: openvino_fp16 compresses the FP32 IR: list {kind: openvino} before it")
        fp32 = ctx.made["openvino_fp32"]
        compress_ir_to_fp16(ctx.work_dir / fp32.files[0], ctx.work_dir / "student_fp16.xml")
        return Artifact(
            "openvino_fp16",
            ("student_fp16.xml", "student_fp16.bin"),
            "openvino",
            precision="fp16",
            derived_from=fp32.name,
            golden_min_cosine=FP16_GOLDEN_MIN_COSINE,
            options={"precision": "f32"},
        )


@EXPORTERS.register("ort_mobile")
@dataclass
class OrtMobileExport:
    """ONNX Runtime's mobile format (``.ort``) of the ONNX export, with the operator list of a reduced runtime build.

    Converted from the ONNX artifact: list ``onnx`` before it.
    """

    kind: str = "ort_mobile"
    # arm: phones and Jetson CPUs (x86-only NCHWc layouts left out, so the file runs on any CPU); amd64 keeps them
    target_platform: Literal["arm", "amd64"] = "arm"

    def export(self, ctx: ExportContext) -> Artifact:
        """Write ``student.ort`` and ``student.required_operators.config`` from the ONNX artifact."""
        onnx = ctx.onnx_export("ort_mobile")
        model, config = convert_to_ort(ctx.work_dir / onnx.files[0], ctx.work_dir, self.target_platform)
        return Artifact(
            "ort_mobile_fp32",
            (model.name, config.name),
            "onnxruntime",
            derived_from=onnx.name,
            golden_min_cosine=FP32_GOLDEN_MIN_COSINE,
        )
