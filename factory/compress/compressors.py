"""Compressors, registered by ``kind``: each derives a smaller or faster artifact from one the build already has.

A recipe lists them, ``compress.methods: [{kind: openvino_ptq, preset: mixed}]``; the registered object is that
entry's config dataclass, and its ``compress`` writes the new files and returns their
:class:`~factory.runtime.artifacts.Artifact` record, ``derived_from`` its parent. The compress stage measures every
result against its parent on held-out faces; validation and the gates then treat it like any other artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from factory.compress.ptq import quantize_openvino
from factory.registry import Registry
from factory.runtime.artifacts import Artifact

Fail = Callable[[str, str], None]
COMPRESSORS: Registry[type] = Registry("compressor")
# INT8 kernels and rounding differ between CPUs more than FP32 ones: the golden check on a target is looser.
INT8_GOLDEN_MIN_COSINE = 0.99


@dataclass
class CompressContext:
    """What a compressor works from."""

    parents: dict[str, Any]  # the build's artifacts so far, by name (BuiltArtifact: record + directory)
    calibration: np.ndarray  # normalised float32 N×3×H×W synthetic faces (never benchmark faces)
    work_dir: Path


@COMPRESSORS.register("openvino_ptq")
@dataclass
class OpenVINOPTQ:
    """NNCF post-training INT8 quantization of the OpenVINO FP32 IR (QuantFace-style synthetic calibration)."""

    kind: str = "openvino_ptq"
    preset: Literal["mixed", "performance"] = "mixed"
    keep_head_float: bool = False
    fast_bias_correction: bool = True

    def compress(self, ctx: CompressContext) -> Artifact:
        """Write ``student_int8.xml/.bin``."""
        if "openvino_fp32" not in ctx.parents:
            raise ValueError(
                "compress.methods: openvino_ptq quantizes the OpenVINO FP32 IR: list {kind: openvino} in export.formats"
            )
        parent = ctx.parents["openvino_fp32"]
        quantize_openvino(
            parent.path,
            ctx.work_dir / "student_int8.xml",
            ctx.calibration,
            preset=self.preset,
            keep_head_float=self.keep_head_float,
            fast_bias_correction=self.fast_bias_correction,
        )
        return Artifact(
            "openvino_int8",
            ("student_int8.xml", "student_int8.bin"),
            "openvino",
            precision="int8",
            derived_from=parent.name,
            golden_min_cosine=INT8_GOLDEN_MIN_COSINE,
            options={"precision": "f32"},  # the non-quantized ops run in FP32, as when it was measured
        )
