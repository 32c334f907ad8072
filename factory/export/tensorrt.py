"""Building a TensorRT engine from one of the factory's ONNX files on a machine that has the build's packages.

Reads the contract from the ONNX's metadata and checks that an INT8 build gets a Q/DQ ONNX, then builds with
:func:`factory.runtime.tensorrt.build_engine`, which the on-target runner calls directly (it has the contract from
its bundle and no onnx package). ``tensorrt`` is imported inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path

from factory.runtime.tensorrt import _import_tensorrt
from factory.runtime.tensorrt import build_engine as build_runtime_engine


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    int8: bool = False,
    fp16: bool = False,
    workspace_mb: int = 1024,
    max_batch: int = 32,
    opt_batch: int = 1,
) -> Path:
    """Build and save a serialized TensorRT engine for an ONNX file with a dynamic batch axis.

    Args:
        onnx_path: ONNX from :func:`factory.export.onnx.export_onnx` (FP32), or an explicit Q/DQ ONNX for INT8.
        engine_path: the engine file to write; its contract goes to ``engine_path.with_suffix(".json")``
            (read back by :func:`factory.runtime.contract.read_engine_sidecar`).
        int8: build from Q/DQ (explicit quantization, strongly typed network); the ONNX must contain Q/DQ nodes.
        fp16: let TensorRT pick FP16 kernels (an FP32 ONNX).
        workspace_mb: builder workspace memory pool limit.
        max_batch: largest batch the optimisation profile accepts.
        opt_batch: the batch size TensorRT tunes kernels for.

    Returns:
        ``engine_path`` as a :class:`Path`.

    """
    import onnx

    from factory.export.onnx import read_onnx_contract

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such ONNX file to build a TensorRT engine from")
    _import_tensorrt()  # says how to install it before the ONNX is read
    contract = read_onnx_contract(onnx_path)
    if int8:
        ops = {node.op_type for node in onnx.load(str(onnx_path), load_external_data=False).graph.node}
        if not {"QuantizeLinear", "DequantizeLinear"} <= ops:
            raise ValueError(
                f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes: TensorRT INT8 needs an explicitly "
                "quantized (Q/DQ) ONNX; quantize the model with NNCF, strip it to native Q/DQ "
                "(nncf.strip(..., StripFormat.NATIVE)) and export that, or build with int8=False"
            )
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    return build_runtime_engine(onnx_path, engine_path, contract, precision, workspace_mb, max_batch, opt_batch)
