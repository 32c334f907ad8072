"""QuantFace-style QAT: NNCF fake quantization of the torch student, fine-tuned through the training loop against its
FP32 self on procedural faces, written as an INT8 IR and a Q/DQ ONNX that carry the contract."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest
import torch
from distill_toys import Slow, Stopped
from helpers import randomise_stats

from factory.compress import COMPRESSORS
from factory.compress.compressors import CompressContext
from factory.compress.qat import QuantFaceQAT, keep_batchnorm_frozen
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


def _qat_context(tmp_path: Path) -> tuple[CompressContext, torch.nn.Module]:
    tmp_path.mkdir(exist_ok=True)
    torch.manual_seed(0)  # the same student in every directory
    student = create_model("tinyfar_c").eval()
    randomise_stats(student, seed=0)
    save_model(tmp_path / "student.pt", student)
    parent = BuiltArtifact(Artifact("torch_fp32", ("student.pt",), "torch"), tmp_path)
    calibration = fixed_inputs(student.contract, n=16, seed=1)
    return CompressContext({"torch_fp32": parent}, calibration, tmp_path, world=ProceduralFaceWorld(seed=0)), student


# About 40 s on 2 cores; the default run builds the QAT recipe end to end (test_build), this checks the files closely.
@pytest.mark.slow
def test_qat_fine_tunes_and_writes_an_int8_ir_and_a_qdq_onnx(tmp_path: Path) -> None:
    ctx, student = _qat_context(tmp_path)
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


# About 2 minutes on 2 cores: three QAT runs of TinyFaR-C.
@pytest.mark.slow
def test_an_interrupted_qat_resumes_to_the_same_int8_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fine-tune checkpoints through the loop; a crash mid-way resumes to the file an uncut run writes."""
    train = TrainConfig(
        steps=4, batch_size=4, optimizer="sgd", lr=1e-2, checkpoint_every=2, channels_last=False, tensorboard=False
    )
    outputs, opened = {}, ProceduralSourceConfig.open
    inputs = fixed_inputs(create_model("tinyfar_c").contract, n=4, seed=3)
    for run in ("whole", "cut"):
        ctx, _ = _qat_context(tmp_path / run)
        method = QuantFaceQAT(source=ProceduralSourceConfig(), train=train, freeze_batchnorm=True)
        if run == "cut":
            monkeypatch.setattr(ProceduralSourceConfig, "open", lambda self, where: Slow(opened(self, where), 0, 3))
            with pytest.raises(Stopped):
                method.compress(ctx)
            assert torch.load(ctx.work_dir / "qat" / "resume.pt", weights_only=True)["step"] == 2
            monkeypatch.undo()
        ir, qdq = method.compress(ctx)
        if run == "cut":
            assert ctx.notes["qat"]["resumed_from"] == 2
        outputs[run] = [
            runner(ctx.work_dir / a.files[0])(inputs) for a, runner in ((ir, openvino_runner), (qdq, onnx_runner))
        ]
    for whole, cut in zip(outputs["whole"], outputs["cut"], strict=True):
        assert (whole == cut).all()


def test_frozen_batchnorm_keeps_its_running_statistics_while_the_rest_trains() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5))
    before = model[1].running_mean.clone()
    keep_batchnorm_frozen(model)
    assert model.train() is model and model.training and model[2].training and not model[1].training
    model(torch.randn(2, 3, 8, 8) + 3)
    assert torch.equal(model[1].running_mean, before)
    model.eval()
    assert not model[2].training


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
