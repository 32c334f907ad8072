"""Building and running TensorRT engines on the target GPU (TensorRT ≥ 10).

Engines are tied to the GPU, TensorRT version and OS that built them, so they are built where they run: by the
on-target runner (:mod:`factory.runtime.target_runner`) from the shipped ONNX, with :func:`build_engine` (no torch,
no onnx package), and :func:`trtexec_command` says the same build as a ``trtexec`` line. INT8 is explicit quantization
only: the ONNX holds QuantizeLinear/DequantizeLinear pairs and the network is built strongly typed, so TensorRT
honours their placement (implicit INT8 calibrators are deprecated since 10.1). An engine cannot carry the model
contract (a header breaks loaders), so it is written to, and read from, a ``<engine>.json`` sidecar. ``tensorrt`` is
imported inside the functions; device buffers and the stream come from ``libcudart`` (:mod:`factory.runtime.cuda`),
so a TensorRT target needs TensorRT and numpy, not torch.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from factory.files import write_bytes, write_json
from factory.runtime.contract import ModelContract, engine_sidecar, read_engine_sidecar
from factory.runtime.cuda import CudaRuntime, DeviceBuffer
from factory.runtime.preprocess import check_model_input

INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt (or 'factory[tensorrt]') on the target; engines are built on the "
    "target GPU"
)


class TensorRTRunner:
    """Runs a serialized engine on the current CUDA device; its buffers come from :mod:`factory.runtime.cuda`."""

    kind = "tensorrt"
    threads = 1  # a GPU engine has no CPU thread setting; the launching thread is the one

    def __init__(
        self,
        engine_path: str | os.PathLike[str],
        contract: ModelContract | None = None,
        cuda: CudaRuntime | None = None,
    ) -> None:
        trt = _import_tensorrt()
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file; expected a serialized TensorRT engine here")
        self.contract = contract if contract is not None else read_engine_sidecar(self.path)
        self.cuda = cuda if cuda is not None else CudaRuntime()
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:  # TensorRT logs its reason and returns None for a corrupt or foreign engine
            raise ValueError(
                f"{self.path}: could not be deserialised: corrupt, or built for another GPU or TensorRT version "
                "(expected a serialized engine built on this GPU by build_engine)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._output)))
        self.stream = self.cuda.stream()
        weakref.finalize(self, self.cuda.destroy_stream, self.stream, False)
        self._bound: Callable[[], object] = lambda: None  # (weakly) the binding whose shape and addresses it holds

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Embed one batch of normalised input."""
        binding = self._bind(x)
        binding.execute()
        return binding.fetch()

    def prepare(self, x: np.ndarray) -> Callable[[], object]:
        """The engine's execution on ``x`` already on the GPU, synchronised: host copies stay outside."""
        return self._bind(x).execute

    def _bind(self, x: np.ndarray) -> _Binding:
        inputs = np.ascontiguousarray(check_model_input(x, self.contract, self.kind))
        self.context.set_input_shape(self._input, tuple(inputs.shape))
        output = np.empty(tuple(self.context.get_tensor_shape(self._output)), dtype=self._output_dtype)
        binding = _Binding(self, inputs, output)
        self.cuda.to_device(binding.input.address, inputs, self.stream)
        self.cuda.synchronize(self.stream)  # the input is on the device before anyone starts a timer
        return binding


class _Binding:
    """One input's device buffers: independent of other bindings, so prepared calls stay valid side by side."""

    def __init__(self, runner: TensorRTRunner, inputs: np.ndarray, output: np.ndarray) -> None:
        self.runner, self.shape, self.output = runner, tuple(inputs.shape), output
        self.input, self.result = DeviceBuffer(runner.cuda, inputs.nbytes), DeviceBuffer(runner.cuda, output.nbytes)
        self._use()

    def _use(self) -> None:
        runner = self.runner
        runner.context.set_input_shape(runner._input, self.shape)
        runner.context.set_tensor_address(runner._input, self.input.address)
        runner.context.set_tensor_address(runner._output, self.result.address)
        runner._bound = weakref.ref(self)  # weak: a binding's buffers go back as soon as its caller drops it

    def execute(self) -> None:
        runner = self.runner
        if runner._bound() is not self:  # another binding ran since: give the context back this one's shape and memory
            self._use()
        if not runner.context.execute_async_v3(runner.stream):
            raise RuntimeError(f"TensorRT execution of {runner.path} failed")
        runner.cuda.synchronize(runner.stream)

    def fetch(self) -> np.ndarray:
        """The output of the last :meth:`execute`, on the host, as float32."""
        output = self.runner.cuda.to_host(self.output, self.result.address, self.runner.stream)
        return output.astype(np.float32, copy=False)


def tensorrt_runner(engine_path: str | os.PathLike[str], contract: ModelContract | None = None) -> TensorRTRunner:
    """Runner (:class:`factory.runtime.runners.Runner`) over a serialized engine.

    Args:
        engine_path: the ``.engine``/``.plan`` file.
        contract: overrides the contract read from the engine's ``.json`` sidecar.

    Returns:
        A :class:`TensorRTRunner`.

    """
    return TensorRTRunner(engine_path, contract=contract)


ENGINE_PRECISIONS = ("fp32", "fp16", "int8")


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    contract: ModelContract,
    precision: str = "fp32",
    workspace_mb: int = 1024,
    max_batch: int = 32,
    opt_batch: int = 1,
) -> Path:
    """Build and save a serialized engine for an ONNX file with a dynamic batch axis, and its contract sidecar.

    Args:
        onnx_path: an FP32 ONNX (``fp32``, ``fp16``) or an explicitly quantized Q/DQ ONNX (``int8``).
        engine_path: the engine file; its contract goes to ``<engine>.json``.
        contract: the model's input contract (the ONNX's metadata; the runner has it from its bundle).
        precision: ``fp32``; ``fp16`` lets TensorRT pick FP16 kernels; ``int8`` builds strongly typed, so the
            Q/DQ nodes decide which layers run in INT8.
        workspace_mb: builder workspace memory pool limit.
        max_batch: largest batch the optimisation profile accepts.
        opt_batch: the batch size TensorRT tunes kernels for.

    Returns:
        ``engine_path`` as a :class:`Path`.

    Raises:
        ImportError: TensorRT is not installed (with how to install it).
        ValueError: an unknown precision.
        RuntimeError: TensorRT could not parse the ONNX or build the engine.

    """
    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f"engine precision {precision!r} (expected one of {ENGINE_PRECISIONS})")
    trt = _import_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such ONNX file to build a TensorRT engine from")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode in TensorRT 10; strong typing makes the Q/DQ types decide INT8 precision.
    strongly_typed = precision == "int8"
    flags = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
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
        {
            "contract": contract.to_dict(),
            "int8": precision == "int8",
            "precision": precision,
            "onnx": onnx_path.name,
            "tensorrt": trt.__version__,
        },
    )
    return engine_path


def trtexec_command(
    onnx_file: str,
    engine_file: str,
    input_name: str,
    input_size: tuple[int, int],
    precision: str = "fp32",
    workspace_mb: int = 1024,
    max_batch: int = 32,
    opt_batch: int = 1,
) -> list[str]:
    """The ``trtexec`` command that builds the same engine as :func:`build_engine` (for a shell on the target)."""
    height, width = input_size

    def shape(batch: int) -> str:
        return f"{input_name}:{batch}x3x{height}x{width}"

    command = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}"]
    command += [f"--minShapes={shape(1)}", f"--optShapes={shape(opt_batch)}", f"--maxShapes={shape(max_batch)}"]
    command += [f"--memPoolSize=workspace:{workspace_mb}M"]
    if precision == "fp16":
        command.append("--fp16")
    if precision == "int8":
        command.append("--stronglyTyped")
    return command


def tensorrt_available() -> bool:
    """Whether the ``tensorrt`` package can be imported here."""
    try:
        _import_tensorrt()
    except ImportError:
        return False
    return True


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return tensorrt
