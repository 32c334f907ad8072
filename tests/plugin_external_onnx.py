"""A new artifact kind in one registered file: the ONNX model with its weights in a separate file.

Importing this module is all it takes: the recipe can then list ``{kind: onnx_external}`` in ``export.formats``, and
the build exports it, checks its parity, validates, gates, deploys and releases it, and verification checks its golden
embedding, with no edit anywhere else (``tests/test_build.py`` proves it). Two files make one artifact: the graph and
its ``.data`` (ONNX's external-data layout, which models over 2 GB need), so it also proves every stage copies,
hashes and ships all of an artifact's files.
"""

from __future__ import annotations

from dataclasses import dataclass

from factory.export.exporters import EXPORTERS, ExportContext
from factory.runtime.artifacts import Artifact


@EXPORTERS.register("onnx_external")
@dataclass
class OnnxExternalDataExport:
    """The ONNX export saved again with every weight in ``student_external.onnx.data`` (metadata kept)."""

    kind: str = "onnx_external"

    def export(self, ctx: ExportContext) -> Artifact:
        """Write ``student_external.onnx`` and its weights from the ONNX export."""
        import onnx

        source = ctx.onnx_export(self.kind)
        model = onnx.load(str(ctx.work_dir / source.files[0]))
        onnx.save_model(
            model,
            str(ctx.work_dir / "student_external.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="student_external.onnx.data",
            # small tensors stay inline: ONNX Runtime's shape inference must read constants such as ReduceMean's axes
            size_threshold=1024,
        )
        return Artifact(
            "onnx_external_fp32",
            ("student_external.onnx", "student_external.onnx.data"),
            "onnxruntime",
            derived_from=source.name,
            golden_min_cosine=0.9999,
        )
