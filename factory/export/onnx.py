"""Torch → ONNX export that carries the model contract and a dynamic batch axis.

The graph comes from the ``torch.export``-based exporter (``dynamo=True``, the default and maintained path since
torch 2.9; the TorchScript exporter is deprecated). It is cleaner than the legacy graph (the onnxscript optimiser
folds the embedding BatchNorm1d into the Gemm) and names the batch axis ``batch``.

ONNX Runtime's CPU ``PRelu`` kernel is not part of its NCHWc layout pipeline: every PReLU after a convolution costs
a layout reorder in and out plus a slow broadcast kernel (about half the time of a MobileFaceNet-style net). So each
per-channel PReLU is rewritten as ``a·x + (1 − a)·relu(x)`` with the two scalings as ``BatchNormalization`` (mean 0,
variance 1, epsilon 0), which ORT turns into NCHWc depthwise convolutions and fuses with the add: about 2× faster
end to end. The algebraically closer ``relu(x) − a·relu(−x)`` is not faster in ORT 1.32 (its Neg/Mul/Sub are not
NCHWc ops either), so it is not used. Scalar-slope PReLU becomes ``LeakyRelu``, which is exact.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from factory.files import write_bytes
from factory.runtime.contract import (
    CONTRACT_KEY,
    MODEL_NAME_KEY,
    MissingContractError,
    ModelContract,
    contract_from_json,
)

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
_REWRITE_TAG = "prelu_rewrite"


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    opset: int = 18,
    dynamic_batch: bool = True,
    rewrite_prelu: bool = True,
) -> Path:
    """Export ``model`` (in eval mode) to an ONNX file that carries its contract.

    Args:
        model: a torch module with a ``.contract`` (:class:`ModelContract`) and a ``.model_name``.
        path: the ``.onnx`` file to write (atomically).
        opset: ONNX opset of the written file. The exporter emits opset 18 and converts down when a lower one is
            asked for; a conversion that does not reach ``opset`` is an error.
        dynamic_batch: make the batch axis symbolic (``batch``) instead of fixing it to 1.
        rewrite_prelu: replace PReLU by the ORT-friendly form described in the module docstring.

    Returns:
        ``path`` as a :class:`Path`.

    """
    contract = _model_contract(model)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters(), torch.empty(0)).device
        # Batch 2, not 1: torch.export specialises a size-1 dimension to a constant even when it is marked dynamic.
        batch = 2 if dynamic_batch else 1
        dummy = torch.zeros(batch, 3, *contract.input_size, device=device)
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                model,
                (dummy,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        model.train(was_training)
    proto = program.model_proto
    written_opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if written_opset != opset:
        raise RuntimeError(
            f"the ONNX exporter wrote opset {written_opset}, not the requested {opset}: "
            f"set export.opset to {written_opset} (or higher) in the recipe"
        )
    if rewrite_prelu:
        rewrite_prelu_for_ort(proto)
    del proto.metadata_props[:]
    for key, value in ((CONTRACT_KEY, contract.to_json()), (MODEL_NAME_KEY, str(getattr(model, "model_name", "")))):
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(proto, full_check=True)
    return write_bytes(path, proto.SerializeToString())


def read_onnx_contract(path: str | os.PathLike[str]) -> ModelContract:
    """Read the :class:`ModelContract` stored in an ONNX file's ``metadata_props`` by :func:`export_onnx`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    props = _metadata(path)
    if CONTRACT_KEY not in props:
        raise MissingContractError(
            f"{path} has no {CONTRACT_KEY!r} metadata, so its input contract is unknown: "
            "export it with factory.export.onnx.export_onnx (or pass the contract explicitly)"
        )
    return contract_from_json(props[CONTRACT_KEY], f"{path}: metadata {CONTRACT_KEY!r}")


def read_onnx_model_name(path: str | os.PathLike[str]) -> str:
    """Read the model name stored in an ONNX file by :func:`export_onnx` (empty if absent)."""
    return _metadata(Path(path)).get(MODEL_NAME_KEY, "")


def _metadata(path: Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file; a file that does not parse is an error naming it."""
    from google.protobuf.message import DecodeError

    try:
        # Weights are not needed to read metadata; skipping external data keeps this cheap for big models.
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as e:
        raise ValueError(f"{path}: corrupt or not an ONNX model ({e}) (expected an ONNX model (.onnx))") from None
    return {p.key: p.value for p in model.metadata_props}


def rewrite_prelu_for_ort(model: onnx.ModelProto) -> int:
    """Rewrite ``PRelu`` nodes in place as described in the module docstring; returns how many were rewritten.

    A PReLU whose slope is not a constant initializer, or whose slope does not broadcast along axis 1 only, is
    left as it is.
    """
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    ranks = value_ranks(model)
    new_nodes: list[onnx.NodeProto] = []
    replaced_slopes: set[str] = set()
    rewritten = 0
    for node in graph.node:
        slope_name = node.input[1] if node.op_type == "PRelu" else ""
        if slope_name not in inits:
            new_nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        prefix = f"{node.name or y}/{_REWRITE_TAG}"
        slope = numpy_helper.to_array(inits[slope_name]).astype(np.float32)
        dims = list(slope.shape)
        while dims and dims[0] == 1:  # leading 1s only broadcast
            dims.pop(0)
        if slope.size == 1:
            new_nodes.append(helper.make_node("LeakyRelu", [x], [y], name=prefix, alpha=float(slope.reshape(()))))
        elif ranks.get(x) is not None and dims == [slope.size] + [1] * (ranks[x] - 2):
            a = slope.reshape(-1)
            new_nodes += [
                _channel_scale(graph, x, f"{prefix}/linear", a, prefix + "/a"),
                helper.make_node("Relu", [x], [f"{prefix}/relu"], name=f"{prefix}/relu"),
                _channel_scale(graph, f"{prefix}/relu", f"{prefix}/positive", 1.0 - a, prefix + "/one_minus_a"),
                helper.make_node("Add", [f"{prefix}/linear", f"{prefix}/positive"], [y], name=f"{prefix}/add"),
            ]
        else:
            new_nodes.append(node)
            continue
        replaced_slopes.add(slope_name)
        rewritten += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    still_used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    for name in replaced_slopes - still_used:
        graph.initializer.remove(inits[name])
    return rewritten


def restore_prelu(model: onnx.ModelProto) -> int:
    """Undo :func:`rewrite_prelu_for_ort` in place (exactly: the slopes are kept as the BatchNorm scales).

    Runtimes with a fused PReLU (OpenVINO, TensorRT) are faster on the original op. Returns how many were restored.
    """
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    by_name = {node.name: node for node in graph.node}
    ranks = value_ranks(model)
    replaced: dict[str, onnx.NodeProto] = {}  # name of the rewrite's Add -> the restored PRelu
    dropped: set[str] = set()
    for node in graph.node:
        if node.op_type != "Add" or not node.name.endswith(f"/{_REWRITE_TAG}/add"):
            continue
        prefix = node.name.removesuffix("/add")
        parts = [by_name.get(f"{prefix}/{suffix}") for suffix in ("a/bn", "relu", "one_minus_a/bn")]
        if any(part is None for part in parts):
            continue
        x = parts[0].input[0]
        slope = numpy_helper.to_array(inits[parts[0].input[1]])
        slope_name = f"{prefix}/slope"
        rank = ranks.get(x) or 4
        graph.initializer.append(numpy_helper.from_array(slope.reshape(-1, *([1] * (rank - 2))), slope_name))
        replaced[node.name] = helper.make_node("PRelu", [x, slope_name], list(node.output), name=prefix)
        dropped.update(part.name for part in parts)
        dropped.update(name for part in (parts[0], parts[2]) for name in part.input[1:])
    kept = [replaced.get(node.name, node) for node in graph.node if node.name not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    for name in dropped & set(inits):
        graph.initializer.remove(inits[name])
    return len(replaced)


def _channel_scale(graph: onnx.GraphProto, x: str, y: str, scale: np.ndarray, prefix: str) -> onnx.NodeProto:
    """``y = scale[c] · x`` as an inference BatchNormalization (mean 0, var 1, eps 0, bias 0)."""
    channels = scale.size
    params = {
        "scale": scale.astype(np.float32),
        "bias": np.zeros(channels, np.float32),
        "mean": np.zeros(channels, np.float32),
        "var": np.ones(channels, np.float32),
    }
    names = []
    for key, value in params.items():
        names.append(f"{prefix}/{key}")
        graph.initializer.append(numpy_helper.from_array(value, names[-1]))
    return helper.make_node("BatchNormalization", [x, *names], [y], name=f"{prefix}/bn", epsilon=0.0)


def value_ranks(model: onnx.ModelProto) -> dict[str, int | None]:
    """The rank of every value of the graph that ONNX shape inference can type (None where it has no shape)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks: dict[str, int | None] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        tensor_type = info.type.tensor_type
        ranks[info.name] = len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
    return ranks


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and its opset-18 down-conversion notice (the opset is checked after)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _model_contract(model: nn.Module) -> ModelContract:
    contract = getattr(model, "contract", None)
    if not isinstance(contract, ModelContract):
        raise TypeError(
            f"{type(model).__name__} has no .contract (ModelContract); build it with factory.models.zoo.create_model "
            "or set model.contract before exporting"
        )
    return contract
