"""The export stage: ONNX FP32 and OpenVINO FP32 IR from the distilled student, each checked against torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from factory.export.onnx import export_onnx
from factory.export.openvino import convert_to_openvino
from factory.export.parity import check_parity, fixed_inputs, require_parity
from factory.export.runtimes import onnx_runner, openvino_runner, torch_runner
from factory.models.checkpoint import load_model

if TYPE_CHECKING:
    from factory.pipeline import StageContext

ONNX_FILE = "student.onnx"
OPENVINO_FP32_FILE = "student_fp32.xml"


def export_student(ctx: StageContext) -> dict[str, Any]:
    """Write ``student.onnx`` and ``student_fp32.xml/.bin``; fail if either drifts from torch."""
    cfg, threads = ctx.recipe.export, ctx.recipe.threads
    model = load_model(ctx.inputs["distill"].path("student.pt")).eval()
    onnx_path = export_onnx(model, ctx.work_dir / ONNX_FILE, opset=cfg.opset)
    xml_path = convert_to_openvino(onnx_path, ctx.work_dir / OPENVINO_FP32_FILE, model.contract)
    inputs = fixed_inputs(model.contract)
    reference = torch_runner(model, threads=threads)
    parity = {
        "onnx_fp32": check_parity(reference, onnx_runner(onnx_path, threads=threads), inputs),
        "openvino_fp32": check_parity(reference, openvino_runner(xml_path, threads=threads), inputs),
    }
    for name, result in parity.items():
        require_parity(result, cfg.min_parity_cosine, f"{name} vs torch")
    return {"parity": {name: result.to_dict() for name, result in parity.items()}}
