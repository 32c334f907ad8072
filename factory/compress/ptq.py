"""NNCF post-training INT8 quantization of an exported FP32 model: the OpenVINO IR, or the ONNX model as Q/DQ ONNX.

Quantizing the exported file (not the torch model) takes seconds. The OpenVINO result runs with OpenVINO's INT8
kernels; the ONNX result is a standard QuantizeLinear/DequantizeLinear graph that ONNX Runtime runs and TensorRT
builds. Both keep the model's contract.

What keeps embeddings faithful was measured on the demo's TinyFaR-C (``benchmarks/quantization_fidelity.py``,
BENCHMARKS.md "INT8 fidelity"); the defaults are the best settings found there:

- **Activation ranges from the global min/max** over the calibration set (``activation_range: minmax``). NNCF's
  default averages each sample's min and max: calibrating one face at a time, that clips every activation larger
  than a typical face's, and the rare faces that reach those values lose their embedding (TinyFaR-C: cosine to FP32
  mean 0.966, 1st percentile 0.844; with global ranges 0.993 / 0.977).
- **Overflow fix on every layer for the OpenVINO IR** (7-bit weights): CPUs without VNNI multiply u8 by s8 into a
  saturating 16-bit sum, which full 8-bit weights overflow (0.9965 / 0.990 with it, 0.993 / 0.977 on the first layer
  only). ONNX Runtime's Q/DQ kernels measured better without it (0.9952 / 0.985 vs 0.9943 / 0.980).
- The ``mixed`` preset (symmetric weights, asymmetric activations): activations after BatchNorm and PReLU/SiLU are
  not centred on zero (``performance``: 0.990 / 0.967).

NNCF and OpenVINO are imported inside the functions so ``import factory`` stays light.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from factory.export.parity import row_cosines
from factory.recipe.schema import between

if TYPE_CHECKING:
    import onnx
    import openvino as ov

PRESETS = ("mixed", "performance")
ACTIVATION_RANGES = ("minmax", "mean_minmax")
OVERFLOW_FIXES = ("enable", "first_layer", "disable")
_F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # true FP32 for the reference and the float parts of an INT8 IR
# Ops that carry weights or combine the embedding; the head is the run of them after the last spatial tensor.
_HEAD_OP_TYPES = {"MatMul", "Convolution", "GroupConvolution", "Add", "Multiply", "Subtract"}
_ONNX_HEAD_OP_TYPES = {"Gemm", "MatMul", "Conv", "Add", "Mul", "Sub"}


@dataclass
class PTQSettings:
    """How NNCF quantizes (the recipe's compressor entries derive from it, so these are their keys).

    Attributes:
        preset: ``"mixed"`` (symmetric weights, asymmetric activations) or ``"performance"`` (both symmetric; what
            TensorRT's INT8 Q/DQ expects).
        activation_range: ``"minmax"``: each activation quantizer spans the global min and max over the calibration
            set; ``"mean_minmax"``: NNCF's default, the mean over samples of each one's min and max.
        overflow_fix: NNCF's fix for the saturating u8×s8 multiply of CPUs without VNNI (7-bit weights):
            ``"enable"`` (every layer), ``"first_layer"`` or ``"disable"``.
        fast_bias_correction: NNCF's fast bias correction (the full one needs far more time for no gain here).
        keep_head_float: leave the embedding head (the layers after the last spatial feature map: the embedding
            linear/BatchNorm) in floating point.
        subset_size: how many calibration samples NNCF uses; all of them when None.
        min_validation_cosine: with a value, ``nncf.quantize_with_accuracy_control``: every fourth calibration face
            is held out to validate on, and the metric is the mean cosine between the quantized and the FP32
            model's embeddings of them (the FP32 model scores 1), so NNCF's ``max_drop`` is ``1 - this``. A cosine,
            not an accuracy: it needs no labels, it is exact rather than noisy on a few hundred faces, and it is
            what the ``min_int8_cosine`` gate checks on benchmark faces.

    """

    preset: Literal["mixed", "performance"] = "mixed"
    activation_range: Literal["minmax", "mean_minmax"] = "minmax"
    overflow_fix: Literal["enable", "first_layer", "disable"] = "enable"
    fast_bias_correction: bool = True
    keep_head_float: bool = False
    subset_size: int | None = field(default=None, metadata=between(ge=1))  # calibration faces used; null: all
    # NNCF's quantization with accuracy control: layers that cost most are put back in floating point until the
    # mean embedding cosine to the FP32 model, on a quarter of the calibration faces held out for it (never the
    # benchmark), is at least this (e.g. 0.998). null: plain PTQ.
    min_validation_cosine: float | None = field(default=None, metadata=between(gt=0, lt=1))

    def __post_init__(self) -> None:
        for name, allowed in (
            ("preset", PRESETS),
            ("activation_range", ACTIVATION_RANGES),
            ("overflow_fix", OVERFLOW_FIXES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"unknown PTQ {name} {value!r} (expected one of {', '.join(allowed)})")


def quantize_openvino(
    xml_in: str | os.PathLike[str],
    xml_out: str | os.PathLike[str],
    calibration: np.ndarray,
    settings: PTQSettings | None = None,
) -> Path:
    """Quantize an FP32 IR to INT8 with NNCF PTQ and save it (with its contract) atomically.

    Args:
        xml_in: the FP32 IR (``.xml``), normally from :func:`factory.export.openvino.convert_to_openvino`.
        xml_out: the INT8 IR to write.
        calibration: normalised float32 inputs ``N×3×H×W`` (never from an evaluation split); each is one sample.
        settings: how to quantize; :class:`PTQSettings` defaults when None.

    Returns:
        ``xml_out`` as a :class:`Path`.

    """
    import openvino as ov

    from factory.export.openvino import save_ir_atomically
    from factory.runtime.contract import get_contract, set_contract

    settings = settings or PTQSettings()
    xml_in = Path(xml_in)
    if not xml_in.is_file():
        raise FileNotFoundError(f"{xml_in}: no such OpenVINO IR to quantize")
    model = ov.Core().read_model(str(xml_in))
    contract = get_contract(model, xml_in)
    samples = _calibration_samples(calibration, contract)
    ignored = head_node_names(model) if settings.keep_head_float else []
    quantized = _nncf_quantize(model, samples, settings, ignored)
    set_contract(quantized, contract)
    if model.has_rt_info(["factory", "model_name"]):
        quantized.set_rt_info(model.get_rt_info(["factory", "model_name"]).astype(str), ["factory", "model_name"])
    return save_ir_atomically(quantized, xml_out)


def quantize_onnx(
    onnx_in: str | os.PathLike[str],
    onnx_out: str | os.PathLike[str],
    calibration: np.ndarray,
    settings: PTQSettings | None = None,
) -> Path:
    """Quantize an FP32 ONNX model to a Q/DQ INT8 ONNX model with NNCF PTQ and save it atomically.

    The result keeps the FP32 model's metadata (its contract and model name), its opset and its dynamic batch axis.

    Args:
        onnx_in: the FP32 ONNX model, normally from :func:`factory.export.onnx.export_onnx`.
        onnx_out: the ``.onnx`` file to write.
        calibration: normalised float32 inputs ``N×3×H×W`` (never from an evaluation split); each is one sample.
        settings: how to quantize; :class:`PTQSettings` with ``overflow_fix="first_layer"`` when None (what
            measured best for ONNX Runtime).

    Returns:
        ``onnx_out`` as a :class:`Path`.

    """
    import onnx

    from factory.export.onnx import read_onnx_contract
    from factory.files import write_bytes

    settings = settings or PTQSettings(overflow_fix="first_layer")
    onnx_in = Path(onnx_in)
    if not onnx_in.is_file():
        raise FileNotFoundError(f"{onnx_in}: no such ONNX model to quantize")
    contract = read_onnx_contract(onnx_in)
    model = onnx.load(str(onnx_in))
    samples = _calibration_samples(calibration, contract)
    input_name = model.graph.input[0].name
    ignored = onnx_head_node_names(model) if settings.keep_head_float else []
    quantized = _nncf_quantize(model, [{input_name: s} for s in samples], settings, ignored)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(quantized)
    return write_bytes(onnx_out, quantized.SerializeToString())


def _calibration_samples(calibration: np.ndarray, contract: Any) -> list[np.ndarray]:
    """The calibration set, checked against the model's contract, as batch-1 samples."""
    from factory.runtime.preprocess import check_model_input

    calibration = check_model_input(np.asarray(calibration), contract, "calibration")
    if len(calibration) == 0:
        raise ValueError("the calibration set is empty: quantization ranges need at least one image")
    # One sample per item: NNCF's statistics treat axis 0 as the sample axis only for batch 1.
    return [calibration[i : i + 1] for i in range(len(calibration))]


def _nncf_quantize(model: Any, samples: list[Any], settings: PTQSettings, ignored: list[str]) -> Any:
    """``nncf.quantize`` (or with accuracy control) of an OpenVINO or ONNX model; returns the same kind of model."""
    nncf = quiet_nncf()
    advanced = advanced_parameters(settings)
    common = {
        "preset": preset(settings),
        "fast_bias_correction": settings.fast_bias_correction,
        "ignored_scope": nncf.IgnoredScope(names=ignored) if ignored else None,
    }
    if settings.min_validation_cosine is None:
        return nncf.quantize(
            model,
            nncf.Dataset(samples),
            subset_size=settings.subset_size or len(samples),
            advanced_parameters=advanced,
            **common,
        )
    calibrate, validate = held_out_split(samples)
    reference = _embeddings(model, validate)
    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(calibrate),
        nncf.Dataset(validate),
        lambda candidate, data: (float(row_cosines(_embeddings(candidate, list(data)), reference).mean()), None),
        max_drop=1.0 - settings.min_validation_cosine,
        subset_size=settings.subset_size or len(calibrate),
        advanced_quantization_parameters=advanced,
        **common,
    )


def quiet_nncf() -> Any:
    """The ``nncf`` module, its INFO lines off (the stage summarises what it did)."""
    # nncf imports torch's C++-extension helper, which warns about CUDA on CPU-only machines: noise in build logs.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    nncf.set_log_level(logging.WARNING)
    return nncf


def preset(settings: PTQSettings) -> Any:
    """NNCF's quantization preset for ``settings.preset``."""
    import nncf

    return nncf.QuantizationPreset.MIXED if settings.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE


def advanced_parameters(settings: PTQSettings) -> Any:
    """NNCF's advanced parameters for the overflow fix and activation range of ``settings``."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return AdvancedQuantizationParameters(
        overflow_fix={
            "enable": OverflowFix.ENABLE,
            "first_layer": OverflowFix.FIRST_LAYER,
            "disable": OverflowFix.DISABLE,
        }[settings.overflow_fix],
        # None leaves NNCF's own choice (the mean of per-sample extremes for per-tensor activations).
        activations_range_estimator_params=(
            RangeEstimatorParametersSet.MINMAX if settings.activation_range == "minmax" else None
        ),
    )


def held_out_split(samples: list[Any]) -> tuple[list[Any], list[Any]]:
    """Every fourth sample held out for accuracy control's validation, the rest to calibrate on."""
    if len(samples) < 8:
        raise ValueError(
            f"min_validation_cosine holds out a quarter of the calibration faces to validate on, and {len(samples)} "
            "are too few (expected at least 8; data.calibration.images sets them)"
        )
    return [s for i, s in enumerate(samples) if i % 4], samples[::4]


def _embeddings(model: Any, samples: list[Any]) -> np.ndarray:
    """Embeddings of ``samples`` by an FP32 or quantized model as NNCF hands it over (ONNX proto or OpenVINO)."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, sample)[0] for sample in samples])
    import openvino as ov

    compiled = model if isinstance(model, ov.CompiledModel) else ov.Core().compile_model(model, "CPU", _F32)
    request = compiled.create_infer_request()
    return np.concatenate([np.array(request.infer(sample)[0]) for sample in samples])


def head_node_names(model: ov.Model) -> list[str]:
    """Names of the embedding head's weighted/combining ops in an IR: those whose output is no longer a feature map.

    Face embedders end in flatten → linear (→ BatchNorm1d, folded into a bias add); everything producing a
    rank ≤ 2 tensor from there to the output is the head.
    """
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in _HEAD_OP_TYPES or op.get_output_size() != 1:
            continue
        rank = op.get_output_partial_shape(0).rank
        if rank.is_static and rank.get_length() <= 2:
            names.append(op.get_friendly_name())
    return _found_head(names)


def onnx_head_node_names(model: onnx.ModelProto) -> list[str]:
    """The same head as :func:`head_node_names`, in an ONNX graph (ranks from ONNX shape inference)."""
    from factory.export.onnx import value_ranks

    ranks = value_ranks(model)
    names = [
        node.name
        for node in model.graph.node
        if node.op_type in _ONNX_HEAD_OP_TYPES
        and len(node.output) == 1
        and ranks.get(node.output[0]) is not None
        and ranks[node.output[0]] <= 2
    ]
    return _found_head(names)


def _found_head(names: list[str]) -> list[str]:
    if not names:
        raise ValueError("keep_head_float: found no embedding head (no linear layer after the last feature map)")
    return names
