"""A new artifact kind in one registered file: an OpenVINO IR with FP16 weights.

Importing this module is all it takes: the recipe can then list ``{kind: openvino_fp16}`` in ``export.formats``,
and the build exports it, checks its parity, validates, gates and releases it, and verification checks its golden
embedding, with no edit anywhere else (``tests/test_build.py`` proves it).
"""

from __future__ import annotations

from dataclasses import dataclass

from factory.export.exporters import EXPORTERS, ExportContext
from factory.runtime.artifacts import Artifact


@EXPORTERS.register("openvino_fp16")
@dataclass
class OpenVINOFP16Export:
    """The FP32 IR saved again with its weights compressed to FP16 (half the file; OpenVINO computes in FP32)."""

    kind: str = "openvino_fp16"

    def export(self, ctx: ExportContext) -> Artifact:
        """Write ``student_fp16.xml/.bin`` from the FP32 IR (its contract travels in rt_info)."""
        import openvino as ov

        fp32 = ctx.made["openvino_fp32"]
        model = ov.Core().read_model(str(ctx.work_dir / fp32.files[0]))
        ov.save_model(model, str(ctx.work_dir / "student_fp16.xml"), compress_to_fp16=True)
        return Artifact(
            "openvino_fp16",
            ("student_fp16.xml", "student_fp16.bin"),
            "openvino",
            precision="fp16",
            derived_from=fp32.name,
            golden_min_cosine=0.999,
            options={"precision": "f32"},
        )
