"""NNCF post-training INT8 quantization of an OpenVINO FP32 IR.

Quantizing the IR (not the torch model) takes seconds and yields an artifact OpenVINO runs with INT8 kernels. The
``mixed`` preset (symmetric weights, asymmetric activations) keeps embeddings closer to FP32 than ``performance``
on face models, because activations after BatchNorm and PReLU are not centred on zero. NNCF and OpenVINO are
imported inside the functions so ``import factory`` stays light.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import openvino as ov

PRESETS = ("mixed", "performance")
# Ops that carry weights or combine the embedding; the head is the run of them after the last spatial tensor.
_HEAD_OP_TYPES = {"MatMul", "Convolution", "GroupConvolution", "Add", "Multiply", "Subtract"}


def quantize_openvino(
    xml_in: str | os.PathLike[str],
    xml_out: str | os.PathLike[str],
    calibration: np.ndarray,
    preset: str = "mixed",
    subset_size: int | None = None,
    fast_bias_correction: bool = True,
    keep_head_float: bool = False,
) -> Path:
    """Quantize an FP32 IR to INT8 with NNCF PTQ and save it (with its contract) atomically.

    Args:
        xml_in: the FP32 IR (``.xml``), normally from :func:`factory.export.openvino.convert_to_openvino`.
        xml_out: the INT8 IR to write.
        calibration: normalised float32 inputs ``N×3×H×W`` (never from an evaluation split); each is one sample.
        preset: ``"mixed"`` (default) or ``"performance"`` (symmetric activations too).
        subset_size: how many calibration samples NNCF uses; all of them by default.
        fast_bias_correction: NNCF's fast bias correction (the slow one needs far more time for little gain here).
        keep_head_float: leave the embedding head (the layers after the last spatial feature map: the embedding
            linear/BatchNorm) in floating point.

    Returns:
        ``xml_out`` as a :class:`Path`.

    """
    # nncf imports torch's C++-extension helper, which warns about CUDA on CPU-only machines: noise in build logs.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # its INFO lines (ignored nodes, ...) are summarised by the stage instead

    from factory.export.openvino import save_ir_atomically
    from factory.runtime.contract import get_contract, set_contract
    from factory.runtime.preprocess import check_model_input

    if preset not in PRESETS:
        raise ValueError(f"unknown PTQ preset {preset!r} (expected one of {', '.join(PRESETS)})")
    xml_in = Path(xml_in)
    if not xml_in.is_file():
        raise FileNotFoundError(f"{xml_in}: no such OpenVINO IR to quantize")
    model = ov.Core().read_model(str(xml_in))
    contract = get_contract(model, xml_in)
    calibration = check_model_input(np.asarray(calibration), contract, "calibration")
    if len(calibration) == 0:
        raise ValueError("the calibration set is empty: quantization ranges need at least one image")
    # One sample per item: NNCF's statistics treat axis 0 as the sample axis only for batch 1.
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    ignored = nncf.IgnoredScope(names=head_node_names(model)) if keep_head_float else None
    quantized = nncf.quantize(
        model,
        dataset,
        preset=nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        subset_size=subset_size or len(calibration),
        fast_bias_correction=fast_bias_correction,
        ignored_scope=ignored,
    )
    set_contract(quantized, contract)
    if model.has_rt_info(["factory", "model_name"]):
        quantized.set_rt_info(model.get_rt_info(["factory", "model_name"]).astype(str), ["factory", "model_name"])
    return save_ir_atomically(quantized, xml_out)


def head_node_names(model: ov.Model) -> list[str]:
    """Names of the embedding head's weighted/combining ops: those whose output is no longer a feature map.

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
    if not names:
        raise ValueError("keep_head_float: found no embedding head (no linear layer after the last feature map)")
    return names
