"""One calling convention for every artifact the factory produces: torch modules, ONNX files, OpenVINO IRs, engines.

A :class:`Runner` takes normalised float32 ``N×3×H×W`` input and returns float32 ``N×D`` embeddings, and carries the
model contract it was built with, so evaluation, parity checks and benchmarks never care which runtime is behind it.

File runtimes are registered in :data:`RUNTIMES` (family ``runtime``). Every registered factory is called as
``factory(path, threads=1, contract=None, **options)``: ``contract`` overrides the one stored in the file, and
``options`` are that runtime's own keywords (e.g. ``precision`` for OpenVINO; an unknown one is a ``TypeError``).
Runtime packages are imported when a runner is built, never at import time. ``"torch"`` is not registered here
(this layer is torch-free); :func:`torch_runner` wraps an in-memory module for the build side.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from factory.registry import Registry
from factory.runtime.contract import (
    CONTRACT_KEY,
    MissingContractError,
    ModelContract,
    contract_from_json,
    get_contract,
)
from factory.runtime.preprocess import check_model_input, to_model_input_numpy

__all__ = [
    "RUNTIMES",
    "SUFFIX_RUNTIMES",
    "OnnxRunner",
    "OpenVINORunner",
    "Runner",
    "TorchRunner",
    "check_model_input",
    "embed_uint8",
    "load_runner",
    "onnx_runner",
    "openvino_runner",
    "torch_runner",
]


@runtime_checkable
class Runner(Protocol):
    """Anything that maps normalised float32 ``N×3×H×W`` input to float32 ``N×D`` embeddings."""

    contract: ModelContract
    kind: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Embed one batch."""
        ...

    def prepare(self, x: np.ndarray) -> Callable[[], object]:
        """The runtime's own inference call on ``x``, bound beforehand: what a latency measurement times."""
        ...


RUNTIMES: Registry[Callable[..., Runner]] = Registry("runtime")


class TorchRunner:
    """Runs a torch module in eval mode under ``inference_mode`` with a fixed intra-op thread count."""

    kind = "torch"

    def __init__(self, model: Any, threads: int = 1) -> None:
        import torch

        contract = getattr(model, "contract", None)
        if not isinstance(contract, ModelContract):
            raise TypeError(f"{type(model).__name__} has no .contract (ModelContract) to run it by")
        self.model, self.contract, self.threads = model.eval(), contract, threads
        self._device = next(model.parameters(), torch.empty(0)).device
        # oneDNN's CPU convolutions run 1.4-1.6x faster on NHWC (measured on TinyFaR-C and IResNet-nano, 2 cores);
        # the numbers are the same up to float rounding. Converts the module in place, as .to() does.
        self._layout = torch.channels_last if self._device.type == "cpu" else torch.contiguous_format
        self.model.to(memory_format=self._layout)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Embed one batch of normalised input."""
        import torch

        x = check_model_input(x, self.contract, self.kind)
        # torch's thread count is process-wide: set it for this call only so runners do not fight over it.
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                batch = torch.from_numpy(x).to(self._device)
                out = self.model(batch.contiguous(memory_format=self._layout) if batch.dim() == 4 else batch)
        finally:
            torch.set_num_threads(previous)
        return out.float().cpu().numpy()

    def prepare(self, x: np.ndarray) -> Callable[[], object]:
        """The module's forward on ``x`` (already a tensor in the module's layout) at this runner's threads."""
        import torch

        batch = torch.from_numpy(check_model_input(x, self.contract, self.kind)).to(self._device)
        batch = batch.contiguous(memory_format=self._layout)

        def forward() -> object:
            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                with torch.inference_mode():
                    return self.model(batch)
            finally:
                torch.set_num_threads(previous)

        return forward


class OnnxRunner:
    """ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread, sequential execution."""

    kind = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], threads: int = 1, contract: ModelContract | None = None) -> None:
        import onnxruntime as ort

        self.path = _existing(path, "an ONNX model (.onnx)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # ORT warns about every unused initializer otherwise
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except _onnxruntime_load_errors() as e:
            raise ValueError(
                f"{self.path}: corrupt or not an ONNX model ({_onnxruntime_reason(e)}) "
                f"(expected {SUFFIX_RUNTIMES['.onnx'][1]})"
            ) from None
        if contract is None:
            metadata = self.session.get_modelmeta().custom_metadata_map
            if CONTRACT_KEY not in metadata:
                raise MissingContractError(
                    f"{self.path} has no {CONTRACT_KEY!r} metadata: export it with factory.export.onnx.export_onnx "
                    "or pass contract= to onnx_runner"
                )
            contract = contract_from_json(metadata[CONTRACT_KEY], f"{self.path}: metadata {CONTRACT_KEY!r}")
        self.contract, self.threads = contract, threads
        self._input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Embed one batch of normalised input."""
        x = check_model_input(x, self.contract, self.kind)
        return np.asarray(self.session.run(None, {self._input: x})[0], dtype=np.float32)

    def prepare(self, x: np.ndarray) -> Callable[[], object]:
        """``run_with_iobinding`` with ``x`` bound as the input: no feed dictionary or copy inside the call."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self._input, check_model_input(x, self.contract, self.kind))
        binding.bind_output(self.session.get_outputs()[0].name)

        def run() -> object:
            self.session.run_with_iobinding(binding)
            return binding  # its outputs: binding.copy_outputs_to_cpu()

        return run


class OpenVINORunner:
    """OpenVINO CPU compiled model with a latency hint, a thread count and an explicit inference precision."""

    kind = "openvino"

    def __init__(
        self,
        xml_path: str | os.PathLike[str],
        threads: int = 1,
        contract: ModelContract | None = None,
        precision: str = "f32",
        device: str = "CPU",
    ) -> None:
        import openvino as ov

        self.path = _existing(xml_path, "an OpenVINO IR (.xml with its .bin)")
        core = ov.Core()
        try:
            # The weights named explicitly: OpenVINO then reads the file as an IR only, instead of trying every
            # frontend on it (TensorFlow's logs its parse failure straight to stderr).
            model = core.read_model(str(self.path), str(self.path.with_suffix(".bin")))
        except RuntimeError as e:  # OpenVINO raises RuntimeError for every unreadable IR
            raise ValueError(openvino_read_error(self.path, e)) from None
        self.contract = contract if contract is not None else get_contract(model, self.path)
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_static and shape[0].is_static:
            # An IR exported with a fixed batch would reject other batch sizes; the rest of the graph is
            # batch-agnostic for every face model we build, so the batch axis is opened up here.
            dims = [-1] + [d.get_length() if d.is_static else -1 for d in list(shape)[1:]]
            model.reshape({model.inputs[0].get_any_name(): ov.PartialShape(dims)})
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        # On AMX/AVX512-BF16 CPUs the plugin silently runs bf16 unless told otherwise; "f32" gives true FP32 numbers.
        if precision != "default":
            config["INFERENCE_PRECISION_HINT"] = precision
        self.precision, self.threads = precision, threads
        try:
            self.compiled = core.compile_model(model, device, config)
        except RuntimeError as e:  # e.g. weights that read fine but do not fit the graph
            raise ValueError(openvino_read_error(self.path, e)) from None
        self._request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Embed one batch of normalised input."""
        x = check_model_input(x, self.contract, self.kind)
        self._request.infer({0: x})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)

    def prepare(self, x: np.ndarray) -> Callable[[], object]:
        """The infer request with ``x`` set as its input tensor (memory shared), as ``benchmark_app`` runs it."""
        import openvino as ov

        request = self.compiled.create_infer_request()
        bound = np.ascontiguousarray(check_model_input(x, self.contract, self.kind))
        request.set_input_tensor(ov.Tensor(bound, shared_memory=True))

        def infer(_memory: np.ndarray = bound) -> object:  # the default keeps the shared input alive with the call
            return request.infer()

        return infer


def torch_runner(model: Any, threads: int = 1) -> Runner:
    """Runner over an in-memory torch module with a ``.contract`` (put in eval mode).

    Not a registered runtime: it takes a module, not a file.

    Args:
        model: an ``nn.Module`` with a :class:`ModelContract` as ``.contract``.
        threads: torch intra-op threads, set for each call only.

    Returns:
        A :class:`TorchRunner`.

    """
    return TorchRunner(model, threads=threads)


@RUNTIMES.register("onnxruntime")
def onnx_runner(path: str | os.PathLike[str], threads: int = 1, contract: ModelContract | None = None) -> Runner:
    """Runner over an ONNX file on ONNX Runtime's CPU provider.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads.
        contract: overrides the contract stored in the file's metadata (needed for foreign files).

    Returns:
        An :class:`OnnxRunner`.

    """
    return OnnxRunner(path, threads=threads, contract=contract)


@RUNTIMES.register("openvino")
def openvino_runner(
    xml_path: str | os.PathLike[str],
    threads: int = 1,
    contract: ModelContract | None = None,
    precision: str = "f32",
    device: str = "CPU",
) -> Runner:
    """Runner over an OpenVINO IR.

    Args:
        xml_path: the IR's ``.xml``.
        threads: ``INFERENCE_NUM_THREADS``.
        contract: overrides the contract stored in the IR's ``rt_info``.
        precision: ``INFERENCE_PRECISION_HINT``: ``"f32"`` (default, true FP32), ``"bf16"``, ``"f16"``, or
            ``"default"`` to leave the plugin's choice (bf16 on AMX CPUs).
        device: OpenVINO device name.

    Returns:
        An :class:`OpenVINORunner`.

    """
    return OpenVINORunner(xml_path, threads=threads, contract=contract, precision=precision, device=device)


@RUNTIMES.register("tensorrt")
def _tensorrt_runner(
    engine_path: str | os.PathLike[str], threads: int = 1, contract: ModelContract | None = None
) -> Runner:
    # Imported here so neither TensorRT nor torch (its buffers) is loaded unless an engine is run.
    from factory.runtime.tensorrt import tensorrt_runner

    del threads  # a GPU engine has no CPU thread setting; accepted so every runtime takes the same arguments
    return tensorrt_runner(engine_path, contract=contract)


# suffix -> (runtime, what a file with that suffix must be; used in the missing-file message)
SUFFIX_RUNTIMES = {
    ".onnx": ("onnxruntime", "an ONNX model (.onnx)"),
    ".ort": ("onnxruntime", "an ONNX Runtime format model (.ort)"),
    ".xml": ("openvino", "an OpenVINO IR (.xml with its .bin)"),
    ".engine": ("tensorrt", "a serialized TensorRT engine (.engine) with its .json contract sidecar"),
    ".plan": ("tensorrt", "a serialized TensorRT engine (.plan) with its .json contract sidecar"),
}


def load_runner(path: str | os.PathLike[str], threads: int = 1, **kwargs: Any) -> Runner:
    """Runner for an artifact file, chosen by its suffix (``.onnx``/``.ort``, ``.xml``, ``.engine``/``.plan``).

    Args:
        path: the artifact file.
        threads: CPU threads of the runtime.
        **kwargs: go to the runtime's factory (``contract=``, or e.g. ``precision="default"`` for OpenVINO).

    Returns:
        The runtime's runner.

    """
    path = Path(path)
    if path.suffix not in SUFFIX_RUNTIMES:
        raise ValueError(
            f"{path}: cannot tell the runtime from suffix {path.suffix!r} (known: {sorted(SUFFIX_RUNTIMES)})"
        )
    runtime, expected = SUFFIX_RUNTIMES[path.suffix]
    _existing(path, expected)
    return RUNTIMES.get(runtime)(path, threads=threads, **kwargs)


def embed_uint8(runner: Runner) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap ``runner`` to take uint8 RGB images ``N×3×H×W``, preprocessed by the runner's own contract."""

    def embed(images: np.ndarray) -> np.ndarray:
        return runner(to_model_input_numpy(images, runner.contract))

    return embed


def _onnxruntime_load_errors() -> tuple[type[Exception], ...]:
    """The exceptions ONNX Runtime raises for a model file it cannot load (they derive from nothing but Exception)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("InvalidProtobuf", "InvalidGraph", "InvalidArgument", "Fail", "NotImplemented", "RuntimeException")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


def _onnxruntime_reason(error: Exception) -> str:
    """ORT's reason without its ``[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from X failed:`` prefix."""
    text = str(error).strip()
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Load model from .*? failed:", "", text)
    return (text.strip().splitlines() or [type(error).__name__])[0].strip().removesuffix(".")


def openvino_read_error(xml_path: Path, error: Exception) -> str:
    """One line for an IR OpenVINO cannot read: not an IR, weights cut short, or OpenVINO's own reason."""
    try:
        text = xml_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    weights = xml_path.with_suffix(".bin")
    size = weights.stat().st_size if weights.is_file() else 0
    needed = _ir_weights_end(text)
    if "<net" not in text:
        problem = "not an OpenVINO IR (no <net> element)"
    elif needed is not None and needed > size:
        problem = f"truncated weights: {weights.name} has {size} bytes but the IR reads up to byte {needed}"
    else:
        # OpenVINO's messages stack "Exception from src/...:84:" and "Check '...' failed at ..." lines above the
        # sentence that says what is wrong.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reasons = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
        problem = f"not a loadable OpenVINO IR ({(reasons or lines or [type(error).__name__])[-1]})"
    return f"{xml_path}: {problem} (expected an OpenVINO IR: the .xml graph with its complete .bin weights)"


def _ir_weights_end(xml_text: str) -> int | None:
    """The largest ``offset + size`` any constant of an IR reads from its ``.bin``; ``None`` when none is found.

    Constants are ``<data ... offset="O" size="S"/>`` elements; a scan of the text is enough, and works on an
    ``.xml`` too broken for an XML parser.
    """
    ends = []
    for tag in re.findall(r"<data\b[^>]*>", xml_text):
        offset, size = re.search(r'\boffset="(\d+)"', tag), re.search(r'\bsize="(\d+)"', tag)
        if offset and size:
            ends.append(int(offset[1]) + int(size[1]))
    return max(ends, default=None)


def _existing(path: str | os.PathLike[str], expected: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected {expected} here")
    if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise FileNotFoundError(
            f"{path.with_suffix('.bin')}: the weights of {path.name} are missing "
            "(expected the IR's .bin beside its .xml)"
        )
    return path
