"""QuantFace-style quantization-aware training: NNCF fake quantization fine-tuned through the one training loop.

QuantFace fine-tunes a fake-quantized face model with the MSE between the normalised embeddings of the quantized
model and of its own full-precision original, on unlabelled synthetic faces. Here NNCF inserts the quantizers into
the distilled torch student (ranges initialised on the calibration faces, as its PTQ does), the training loop
(:func:`factory.train.loop.fit`: checkpoints, resume, TensorBoard, the recipe's optimiser) fine-tunes it with the
FP32 student as the frozen teacher on faces of ``source`` (fresh procedural identities of their own split by
default), and the result is exported twice: a Q/DQ ONNX for ONNX Runtime and TensorRT, and the OpenVINO INT8 IR
converted from it (its ``FakeQuantize`` ops run as INT8 kernels). QuantFace ships only fake-quant checkpoints;
these are real INT8 files.

The Q/DQ ONNX comes from torch's TorchScript exporter: the ``torch.export`` one cannot trace the data-dependent
branch of torch's ``FakeQuantize`` modules that ``nncf.strip`` leaves, while the TorchScript one maps each to a
QuantizeLinear/DequantizeLinear pair.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from factory.compress.compressors import COMPRESSORS, INT8_GOLDEN_MIN_COSINE, NNCFPTQ, CompressContext, Fail
from factory.compress.ptq import advanced_parameters, preset, quiet_nncf
from factory.data.source_context import SourceContext
from factory.distill.methods.feature_kd import FeatureDistillTask
from factory.models.checkpoint import load_model
from factory.recipe.schema import TrainConfig
from factory.runtime.artifacts import Artifact

QAT_SPLIT = "qat"  # procedural identities of its own: never the benchmark's, the calibration's or the student's
ONNX_OPSET = 17  # the TorchScript exporter's QuantizeLinear/DequantizeLinear with per-channel axes

NNCF_EXTENSION_TIMEOUT_VAR = "NNCF_EXTENSION_LOAD_TIMEOUT"  # read by NNCF when it loads the extension
NNCF_EXTENSION_TIMEOUT_S = 900


def _qat_train() -> TrainConfig:
    # QuantFace: SGD with Nesterov momentum; a fine-tune from a trained model, so a small lr and no warm-up restart.
    return TrainConfig(
        steps=200,
        batch_size=64,
        optimizer="sgd",
        lr=0.001,
        momentum=0.9,
        nesterov=True,
        weight_decay=0.0,
        schedule="cosine",
        checkpoint_every=50,
        channels_last=False,  # NNCF's wrapped modules are traced in the default layout
    )


@COMPRESSORS.register("qat")
@dataclass
class QuantFaceQAT(NNCFPTQ):
    """NNCF quantization-aware fine-tuning of the torch student, its FP32 self as teacher (QuantFace).

    Writes ``openvino_qat_int8`` (an INT8 IR) and ``onnx_qat_int8`` (a Q/DQ ONNX), both derived from ``torch_fp32``.
    The PTQ keys set how the quantizers start (preset, activation range, overflow fix, subset size).
    """

    kind: str = "qat"
    # the unlabelled faces it fine-tunes on (any distillation source; QuantFace: synthetic faces)
    source: Any = field(default=None, metadata={"union": "source", "default": {"kind": "procedural"}})
    train: TrainConfig = field(default_factory=_qat_train)
    # BatchNorm in inference mode during the fine-tune: its running statistics, which the FP32 teacher and the
    # exported model use, stay fixed instead of drifting to those of 64-face batches. Measured on the demo's
    # TinyFaR-C (BENCHMARKS.md "INT8 fidelity"): 200 steps reach cosine 0.9967 / 0.9890 frozen, 0.9948 / 0.9848 not.
    freeze_batchnorm: bool = True

    def check(self, fail: Fail) -> None:
        """PTQ keys that have no meaning for a torch model fine-tuned afterwards."""
        if self.keep_head_float:
            fail("keep_head_float", "not available for qat (expected false; an IR's head is found by op, not here)")
        if self.min_validation_cosine is not None:
            fail("min_validation_cosine", "accuracy control is a PTQ of exported files (expected null for qat)")
        if self.train.device != "cpu" or self.train.amp != "none":
            fail("train", "qat trains on the CPU in fp32 (expected device: cpu, amp: none)")

    def compress(self, ctx: CompressContext) -> list[Artifact]:
        """Fine-tune, then write ``student_qat_int8.xml/.bin`` and ``student_qat_int8.onnx``."""
        from factory.train.loop import clear_resume, fit

        parent = self.parent(ctx, "torch_fp32", "the distill stage's student")
        teacher, student = load_model(parent.path).eval(), load_model(parent.path).eval()
        contract = student.contract
        nncf = quiet_nncf()
        # NNCF's torch quantizers are a C++ extension compiled on first use on each machine (and again after torch's
        # headers change, as in a new venv): over a minute on a busy 2-core machine, past NNCF's 60 s default, after
        # which it gives up. A user's own setting stands.
        os.environ.setdefault(NNCF_EXTENSION_TIMEOUT_VAR, str(NNCF_EXTENSION_TIMEOUT_S))
        calibration = torch.from_numpy(ctx.calibration)
        quantized = nncf.quantize(
            student,
            nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))]),
            preset=preset(self),
            subset_size=self.subset_size or len(calibration),
            fast_bias_correction=self.fast_bias_correction,
            advanced_parameters=advanced_parameters(self),
        )
        where = SourceContext(
            world=ctx.world,
            batch_size=self.train.batch_size,
            seed=ctx.seed,
            split=QAT_SPLIT,
            labelled=False,
            size=contract.input_size[0],
        )
        task = FeatureDistillTask(teacher, loss="mse", normalize=True, cache_mb=0)
        if self.freeze_batchnorm:
            keep_batchnorm_frozen(quantized)
        work = ctx.work_dir / "qat"
        work.mkdir(parents=True, exist_ok=True)
        result = fit(quantized, task, self.source.open(where), self.train, work, "qat", ctx.progress)
        quantized.eval()
        example = torch.zeros(1, 3, *contract.input_size)
        stripped = nncf.strip(quantized, example_input=example)
        onnx_path = _write_onnx(stripped, example, ctx.work_dir / "student_qat_int8.onnx", contract, student)
        _write_openvino(onnx_path, ctx.work_dir / "student_qat_int8.xml", contract, student)
        clear_resume(work)
        ctx.notes["qat"] = result.metrics()
        common = {"precision": "int8", "derived_from": parent.name, "golden_min_cosine": INT8_GOLDEN_MIN_COSINE}
        return [
            Artifact(
                "openvino_qat_int8",
                ("student_qat_int8.xml", "student_qat_int8.bin"),
                "openvino",
                options={"precision": "f32"},
                **common,
            ),
            Artifact("onnx_qat_int8", ("student_qat_int8.onnx",), "onnxruntime", **common),
        ]


def keep_batchnorm_frozen(model: torch.nn.Module) -> None:
    """Keep every BatchNorm of ``model`` in inference mode whatever ``model.train()`` asks (the loop calls it)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    train = model.train

    def train_with_frozen_norms(mode: bool = True) -> torch.nn.Module:
        train(mode)
        for norm in norms:
            norm.eval()
        return model

    model.train = train_with_frozen_norms  # type: ignore[method-assign]


def _write_openvino(onnx_path: Path, path: Path, contract: Any, named: Any) -> Path:
    """The Q/DQ ONNX as an INT8 IR (dynamic batch, the student's contract).

    Each Q/DQ pair becomes the ``FakeQuantize`` that OpenVINO runs as INT8, with the same int8 weights and outputs
    (cosine > 0.9999999) as converting the torch model, which OpenVINO's TorchScript decoder took 28 s to trace.
    """
    import openvino as ov

    from factory.export.openvino import RT_INFO_MODEL_NAME, save_ir_atomically
    from factory.runtime.contract import set_contract

    ir = ov.convert_model(str(onnx_path))
    set_contract(ir, contract)
    ir.set_rt_info(str(getattr(named, "model_name", "")), RT_INFO_MODEL_NAME)
    return save_ir_atomically(ir, path)


def _write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, contract: Any, named: Any) -> Path:
    """The fake-quantized model as a Q/DQ ONNX with a dynamic batch, carrying the contract like the FP32 export."""
    import onnx

    from factory.export.onnx import INPUT_NAME, OUTPUT_NAME
    from factory.files import write_bytes
    from factory.runtime.contract import CONTRACT_KEY, MODEL_NAME_KEY

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    del proto.metadata_props[:]
    for key, value in ((CONTRACT_KEY, contract.to_json()), (MODEL_NAME_KEY, str(getattr(named, "model_name", "")))):
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(proto)
    return write_bytes(path, proto.SerializeToString())
