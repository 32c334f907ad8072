"""Running serialized TensorRT engines on the target GPU (TensorRT ≥ 10); building them is in the export layer.

An engine cannot carry the model contract (a header breaks loaders), so it is read from the ``<engine>.json``
sidecar written by :func:`factory.export.tensorrt.build_engine`. ``tensorrt`` and ``torch`` (whose CUDA tensors
hold the input/output buffers) are imported inside the functions, so importing this module needs neither.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from factory.runtime.contract import ModelContract, read_engine_sidecar
from factory.runtime.preprocess import check_model_input

INSTALL_HINT = (
    "TensorRT is not installed: pip install 'factory[tensorrt]' on the target (engines are built on the target GPU)"
)


class TensorRTRunner:
    """Runs a serialized engine on the current CUDA device; input/output buffers are torch CUDA tensors."""

    kind = "tensorrt"
    threads = 1  # a GPU engine has no CPU thread setting; the launching thread is the one

    def __init__(self, engine_path: str | os.PathLike[str], contract: ModelContract | None = None) -> None:
        trt = _import_tensorrt()
        import torch

        self.path = Path(engine_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file; expected a serialized TensorRT engine here")
        self.contract = contract if contract is not None else read_engine_sidecar(self.path)
        self._torch = torch
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:  # TensorRT logs its reason and returns None for a corrupt or foreign engine
            raise ValueError(
                f"{self.path}: could not be deserialised: corrupt, or built for another GPU or TensorRT version "
                "(expected a serialized engine built on this GPU by factory.export.tensorrt.build_engine)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Embed one batch of normalised input."""
        execute, output = self._bind(x)
        execute()
        return output.cpu().numpy()

    def prepare(self, x: np.ndarray) -> Callable[[], object]:
        """The engine's execution on ``x`` already on the GPU, synchronised: host copies stay outside."""
        return self._bind(x)[0]

    def _bind(self, x: np.ndarray) -> tuple[Callable[[], None], Any]:
        torch = self._torch
        inputs = torch.from_numpy(check_model_input(x, self.contract, self.kind)).cuda()
        self.context.set_input_shape(self._input, tuple(inputs.shape))
        output = torch.empty(tuple(self.context.get_tensor_shape(self._output)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self._input, inputs.data_ptr())
        self.context.set_tensor_address(self._output, output.data_ptr())
        stream = torch.cuda.current_stream()

        def execute(_inputs: Any = inputs) -> None:  # the default keeps the input buffer alive with the call
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution of {self.path} failed")
            stream.synchronize()

        return execute, output


def tensorrt_runner(engine_path: str | os.PathLike[str], contract: ModelContract | None = None) -> TensorRTRunner:
    """Runner (:class:`factory.runtime.runners.Runner`) over a serialized engine.

    Args:
        engine_path: the ``.engine``/``.plan`` file.
        contract: overrides the contract read from the engine's ``.json`` sidecar.

    Returns:
        A :class:`TensorRTRunner`.

    """
    return TensorRTRunner(engine_path, contract=contract)


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
