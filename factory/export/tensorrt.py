"""Building TensorRT engines from the factory's ONNX files, on the target GPU (TensorRT ≥ 10).

Engines are tied to the GPU, TensorRT version and OS that built them, so the factory ships ONNX and this module runs
on the target. INT8 is explicit quantization only: the ONNX must already hold QuantizeLinear/DequantizeLinear pairs
and the network is built strongly typed, so TensorRT honours the Q/DQ placement (implicit INT8 calibrators are
deprecated since 10.1 and precision flags are removed in 11). The contract cannot live inside an engine (a header
breaks loaders), so it is written to a sidecar ``<engine>.json``. Running engines is
:mod:`factory.runtime.tensorrt`. ``tensorrt`` is imported inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path

from factory.files import write_bytes, write_json
from factory.runtime.contract import engine_sidecar
from factory.runtime.tensorrt import _import_tensorrt


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    int8: bool = False,
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
        workspace_mb: builder workspace memory pool limit.
        max_batch: largest batch the optimisation profile accepts.
        opt_batch: the batch size TensorRT tunes kernels for.

    Returns:
        ``engine_path`` as a :class:`Path`.

    """
    trt = _import_tensorrt()
    import onnx

    from factory.export.onnx import read_onnx_contract

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such ONNX file to build a TensorRT engine from")
    contract = read_onnx_contract(onnx_path)
    if int8:
        ops = {node.op_type for node in onnx.load(str(onnx_path), load_external_data=False).graph.node}
        if not {"QuantizeLinear", "DequantizeLinear"} <= ops:
            raise ValueError(
                f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes: TensorRT INT8 needs an explicitly "
                "quantized (Q/DQ) ONNX; quantize the model with NNCF, strip it to native Q/DQ "
                "(nncf.strip(..., StripFormat.NATIVE)) and export that, or build with int8=False"
            )

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode in TensorRT 10; strong typing makes the Q/DQ types decide INT8 precision.
    flags = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if int8 else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        chw = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *chw), (opt_batch, *chw), (max_batch, *chw))
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    engine_path = write_bytes(engine_path, bytes(serialized))
    write_json(
        engine_sidecar(engine_path),
        {"contract": contract.to_dict(), "int8": int8, "onnx": onnx_path.name, "tensorrt": trt.__version__},
    )
    return engine_path
