"""QuantFace-style QAT: NNCF fake quantization of the torch student, fine-tuned through the training loop against its
FP32 self on procedural faces, written as an INT8 IR and a Q/DQ ONNX that carry the contract."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest
from helpers import randomise_stats

from factory.compress import COMPRESSORS
from factory.compress.compressors import CompressContext
from factory.compress.qat import QuantFaceQAT
from factory.data.sources import ProceduralSourceConfig
from factory.data.world.renderer import ProceduralFaceWorld
from factory.export.onnx import read_onnx_contract
from factory.export.openvino import read_openvino_contract
from factory.export.parity import check_parity, fixed_inputs
from factory.models.checkpoint import save_model
from factory.models.zoo import create_model
from factory.pipeline.stage import BuiltArtifact
from factory.recipe import load_recipe
from factory.recipe.loader import RecipeError
from factory.recipe.schema import TrainConfig
from factory.runtime.artifacts import Artifact
from factory.runtime.runners import onnx_runner, openvino_runner, torch_runner


# About 40 s on 2 cores; the default run builds the QAT recipe end to end (test_build), this checks the files closely.
@pytest.mark.slow
def test_qat_fine_tunes_and_writes_an_int8_ir_and_a_qdq_onnx(tmp_path: Path) -> None:
    student = create_model("tinyfar_c").eval()
    randomise_stats(student, seed=0)
    save_model(tmp_path / "student.pt", student)
    parent = BuiltArtifact(Artifact("torch_fp32", ("student.pt",), "torch"), tmp_path)
    ctx = CompressContext(
        parents={"torch_fp32": parent},
        calibration=fixed_inputs(student.contract, n=16, seed=1),
        work_dir=tmp_path,
        world=ProceduralFaceWorld(seed=0),
        seed=0,
    )
    train = TrainConfig(steps=3, batch_size=8, optimizer="sgd", lr=1e-4, channels_last=False, tensorboard=False)
    method = QuantFaceQAT(source=ProceduralSourceConfig(), train=train)
    assert COMPRESSORS.get("qat") is QuantFaceQAT
    ir, qdq = method.compress(ctx)
    assert (ir.name, qdq.name) == ("openvino_qat_int8", "onnx_qat_int8")
    assert ir.derived_from == qdq.derived_from == "torch_fp32" and ir.precision == qdq.precision == "int8"
    # trained through the loop: its steps are reported, its resume checkpoint is gone
    assert ctx.notes["qat"]["steps"] == 3 and not (tmp_path / "qat" / "resume.pt").exists()
    xml, onnx_path = tmp_path / ir.files[0], tmp_path / qdq.files[0]
    assert read_openvino_contract(xml) == student.contract == read_onnx_contract(onnx_path)
    import openvino as ov

    ir_ops = Counter(op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops())
    onnx_ops = Counter(node.op_type for node in onnx.load(str(onnx_path)).graph.node)
    assert ir_ops["FakeQuantize"] > 40 and onnx_ops["QuantizeLinear"] > 40 and onnx_ops["DequantizeLinear"] > 40
    # the two files are one model: they agree with each other, and both stay near the FP32 student
    inputs = fixed_inputs(student.contract, n=8, seed=2)
    assert check_parity(openvino_runner(xml), onnx_runner(onnx_path), inputs).min_cosine > 0.99
    for path, runner in ((xml, openvino_runner), (onnx_path, onnx_runner)):
        assert check_parity(torch_runner(student), runner(path), inputs).mean_cosine > 0.9, path
    assert runner(onnx_path)(inputs[:3]).shape == (3, 512)  # dynamic batch


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("keep_head_float", "true", "not available for qat"),
        ("min_validation_cosine", "0.99", "accuracy control is a PTQ of exported files"),
        ("train.amp", "bf16", "qat trains on the CPU in fp32"),
    ],
)
def test_qat_refuses_ptq_keys_it_cannot_honour(tmp_path: Path, key: str, value: str, expected: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("compress:\n  methods:\n    - {kind: qat}\n")
    assert load_recipe(recipe).compress.methods[0].train.steps == 200  # QuantFace-like defaults
    with pytest.raises(RecipeError, match=expected):
        load_recipe(recipe, [f"compress.methods.0.{key}={value}"])
