"""Which layers a quantization moved most: each weighted layer's output compared between the FP32 and INT8 model.

When an INT8 model's embeddings drift from its parent's, the embedding cosine says how much, not where. Here every
weighted layer (convolution, linear) of the parent is made an extra output of both models, both run the same faces,
and each layer gets the mean cosine between its FP32 and INT8 outputs (per face, flattened). Error accumulates down
the network, so the lowest cosines are always the last layers; what a layer *added* is its cosine's fall from its
inputs' (the lowest cosine among the nearest weighted layers it reads from, 1 at the model input). Layers are ranked
by that fall: the first ones are where to look (keep them in floating point with an ignored scope, or give them more
calibration faces).

NNCF keeps the names: a convolution's output tensor in a Q/DQ ONNX, and a layer's friendly name in an INT8 IR, are
the FP32 model's. An INT8 IR's layer outputs cannot be read from its INT8 execution: OpenVINO's CPU plugin moves each
layer's dequantization scales past it, so a convolution's output there is in integer units. Its ``FakeQuantize`` ops
are evaluated in float instead (the same rounding and clamping, :func:`emulate_fake_quantize`): on the demo's
TinyFaR-C that reproduces the INT8 embeddings to cosine 0.997 (0.9967 to FP32 against the INT8 kernels' 0.9968).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from factory.export.parity import row_cosines

_ONNX_LAYERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_OPENVINO_LAYERS = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul"}


def layers_moved_most(
    parent: str | os.PathLike[str], quantized: str | os.PathLike[str], inputs: np.ndarray, top: int = 5
) -> list[dict[str, Any]]:
    """The ``top`` layers whose outputs the quantization moved most, worst first.

    Args:
        parent: the FP32 model (``.onnx`` or an OpenVINO ``.xml``).
        quantized: the INT8 model derived from it, of the same kind.
        inputs: normalised float32 model inputs ``N×3×H×W`` (a few dozen faces suffice).
        top: how many layers to return.

    Returns:
        ``{"layer", "cosine", "input_cosine", "added"}`` per layer: its FP32-vs-INT8 cosine, its inputs' and the
        difference (what the layer added to the drift).
    """
    parent, quantized = Path(parent), Path(quantized)
    if parent.suffix != quantized.suffix or parent.suffix not in (".onnx", ".xml"):
        raise ValueError(f"layer drift compares two .onnx or two .xml models, got {parent.name} and {quantized.name}")
    measure = _onnx_layers if parent.suffix == ".onnx" else _openvino_layers
    cosines, inputs_of = measure(parent, quantized, np.ascontiguousarray(inputs, dtype=np.float32))
    rows = []
    for layer, cosine in cosines.items():
        input_cosine = min((cosines[a] for a in inputs_of[layer] if a in cosines), default=1.0)
        rows.append({"layer": layer, "cosine": cosine, "input_cosine": input_cosine, "added": input_cosine - cosine})
    rows.sort(key=lambda r: -r["added"])
    return rows[:top]


def format_layers(rows: list[dict[str, Any]]) -> str:
    """``conv2d_7 0.9312 (from 0.9950), getitem_3 ...`` for a one-line explanation."""
    return ", ".join(f"{r['layer']} {r['cosine']:.4f} (from {r['input_cosine']:.4f})" for r in rows)


def _cosines(reference: list[np.ndarray], candidate: list[np.ndarray]) -> list[float]:
    """Mean over faces of the cosine between flattened outputs, per layer (all zeros in both: not moved)."""
    return [float(row_cosines(a, b, both_zero=1.0).mean()) for a, b in zip(reference, candidate, strict=True)]


def _nearest_layers(start: Iterable[Any], producer: Callable[[Any], list[Any]], is_layer: Callable[[Any], bool]) -> set:
    """The weighted layers reached first walking up from ``start`` (through everything that is not one)."""
    found, seen, stack = set(), set(), list(start)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if is_layer(node):
            found.add(node)
        else:
            stack.extend(producer(node))
    return found


def _onnx_layers(parent: Path, quantized: Path, x: np.ndarray) -> tuple[dict[str, float], dict[str, set[str]]]:
    import onnx

    fp32, int8 = onnx.load(str(parent)), onnx.load(str(quantized))
    produced_by = {out: node for node in fp32.graph.node for out in node.output}
    in_int8 = {out for node in int8.graph.node for out in node.output}
    layers = [n.output[0] for n in fp32.graph.node if n.op_type in _ONNX_LAYERS and n.output[0] in in_int8]
    if not layers:
        raise ValueError(f"{quantized}: none of {parent.name}'s weighted layers found by name")

    def producers(tensor: str) -> list[str]:
        node = produced_by.get(tensor)
        return [] if node is None else [t for t in node.input if t in produced_by]

    layer_set = set(layers)
    inputs_of = {t: _nearest_layers(producers(t), producers, lambda u: u in layer_set) for t in layers}
    outputs = [_run_onnx(model, layers, x) for model in (fp32, int8)]
    return dict(zip(layers, _cosines(*outputs), strict=True)), inputs_of


def _run_onnx(model: Any, tensors: list[str], x: np.ndarray) -> list[np.ndarray]:
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # outputs without shapes are warned about; they are ours
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(tensors, {session.get_inputs()[0].name: x})


def _openvino_layers(parent: Path, quantized: Path, x: np.ndarray) -> tuple[dict[str, float], dict[str, set[str]]]:
    import openvino as ov

    core = ov.Core()
    fp32, int8 = (core.read_model(str(p), str(p.with_suffix(".bin"))) for p in (parent, quantized))
    int8_ops = {op.get_friendly_name(): op for op in int8.get_ordered_ops()}
    fp32_ops = [op for op in fp32.get_ordered_ops() if op.get_type_name() in _OPENVINO_LAYERS]
    layers = [op.get_friendly_name() for op in fp32_ops if op.get_friendly_name() in int8_ops]
    if not layers:
        raise ValueError(f"{quantized}: none of {parent.name}'s weighted layers found by name")
    by_name = {op.get_friendly_name(): op for op in fp32.get_ordered_ops()}
    layer_set = set(layers)

    def producers(name: str) -> list[str]:
        op = by_name[name]
        return [op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size())]

    inputs_of = {name: _nearest_layers(producers(name), producers, lambda n: n in layer_set) for name in layers}
    emulate_fake_quantize(int8)
    outputs = []
    for model, ops in ((fp32, by_name), (int8, int8_ops)):
        first = len(model.outputs)  # the extra outputs come after the model's own, in the order asked
        model.add_outputs([ops[name].output(0) for name in layers])
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled.create_infer_request().infer({0: x})
        outputs.append([np.asarray(result[compiled.output(first + i)]) for i in range(len(layers))])
    return dict(zip(layers, _cosines(*outputs), strict=True)), inputs_of


def emulate_fake_quantize(model: Any) -> Any:
    """Replace every ``FakeQuantize`` of an OpenVINO model, in place, by the float ops that compute it.

    ``y = round((clamp(x, il, ih) − il) / (ih − il) · (L − 1)) / (L − 1) · (oh − ol) + ol``, OpenVINO's definition,
    with round half to even. The plugin then runs the model in float, so every layer's output is in real units.
    """
    import openvino.opset13 as ops

    for fq in [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]:
        x, low, high, out_low, out_high = (fq.input_value(i) for i in range(5))
        steps = ops.constant(np.float32(fq.get_attributes()["levels"] - 1))
        clamped = ops.minimum(ops.maximum(x, low), high)
        scaled = ops.multiply(ops.divide(ops.subtract(clamped, low), ops.subtract(high, low)), steps)
        level = ops.round(scaled, "half_to_even")
        y = ops.add(ops.multiply(ops.divide(level, steps), ops.subtract(out_high, out_low)), out_low)
        for target in fq.output(0).get_target_inputs():
            target.replace_source_output(y.output(0))
    model.validate_nodes_and_infer_types()
    return model
