"""The TensorRT runner's torch-free plumbing (libcudart through ctypes), where no GPU and no TensorRT exist.

A stand-in ``libcudart`` compiled here from C keeps "device" memory on the host with the CUDA runtime's exact
signatures and error codes, and a stand-in ``tensorrt`` module computes a known function from the addresses the
runner binds. Together they check what breaks silently on a real GPU: ctypes argument types, copies in both
directions, buffer sizes per batch, bindings that stay valid side by side, frees, error text, and that no torch is
needed. The real engine runs in the ``tensorrt``-marked tests of test_export and test_deploy.
"""

from __future__ import annotations

import ctypes
import gc
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from factory.runtime.contract import ModelContract
from factory.runtime.cuda import CudaRuntime, DeviceBuffer, cudart_candidates
from factory.runtime.tensorrt import TensorRTRunner

STAND_IN_CUDART = r"""
#include <stdlib.h>
#include <string.h>
static int live = 0, streams = 0, last_kind = 0;
int cudaMalloc(void **p, size_t n) {
    if (n > ((size_t)1 << 40)) return 2;  /* cudaErrorMemoryAllocation */
    *p = malloc(n); live++; return *p ? 0 : 2;
}
int cudaFree(void *p) { free(p); live--; return 0; }
int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *stream) {
    if (kind != 1 && kind != 2) return 21;  /* cudaErrorInvalidMemcpyDirection */
    if (!stream) return 400;  /* cudaErrorInvalidResourceHandle: the runner always passes its own stream */
    last_kind = kind; memcpy(dst, src, n); return 0;
}
int cudaStreamCreate(void **s) { *s = (void *)(size_t)(0x1000 + ++streams); return 0; }
int cudaStreamSynchronize(void *s) { return s ? 0 : 400; }
int cudaStreamDestroy(void *s) { streams--; return s ? 0 : 400; }
const char *cudaGetErrorString(int e) { return e == 2 ? "out of memory" : "invalid resource handle"; }
int live_allocations(void) { return live; }
int live_streams(void) { return streams; }
int last_copy_kind(void) { return last_kind; }
"""

FEATURES = 4


@pytest.fixture(scope="module")
def cudart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler here to build the stand-in libcudart")
    folder = tmp_path_factory.mktemp("cudart")
    (folder / "cudart.c").write_text(STAND_IN_CUDART)
    library = folder / "libcudart.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(folder / "cudart.c")], check=True)
    return library


def _host_view(address: int, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(address)).reshape(shape)


class _Context:
    """Embeds as ``out[b, j] = (j + 1) * sum(x[b])``, reading and writing the bound addresses."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] = ()
        self.addresses: dict[str, int] = {}
        self.streams: list[int] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        assert name == "input"
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert name == "embedding"
        return (self.shape[0], FEATURES)

    def set_tensor_address(self, name: str, address: int) -> bool:
        assert isinstance(address, int) and address
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream: int) -> bool:
        self.streams.append(stream)
        x = _host_view(self.addresses["input"], self.shape)
        out = _host_view(self.addresses["embedding"], (self.shape[0], FEATURES))
        out[:] = x.reshape(self.shape[0], -1).sum(axis=1, keepdims=True) * np.arange(1, FEATURES + 1)
        return True


class _Engine:
    num_io_tensors = 2

    def __init__(self) -> None:
        self.context = _Context()

    def get_tensor_name(self, i: int) -> str:
        return ["input", "embedding"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "input" else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return "FLOAT"

    def create_execution_context(self) -> _Context:
        return self.context


def _stand_in_tensorrt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=0: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.nptype = lambda dtype: {"FLOAT": np.float32}[dtype]

    class Runtime:
        def __init__(self, logger: object) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> _Engine | None:
            return _Engine() if data == b"stand-in engine" else None

    trt.Runtime = Runtime
    return trt


def _make_runner(cudart: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> TensorRTRunner:
    monkeypatch.setitem(sys.modules, "tensorrt", _stand_in_tensorrt())
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` on the way fails
    engine = folder / "model.engine"
    engine.write_bytes(b"stand-in engine")
    return TensorRTRunner(engine, contract=ModelContract(input_size=(4, 4)), cuda=CudaRuntime(cudart))


@pytest.fixture
def runner(cudart: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TensorRTRunner:
    return _make_runner(cudart, tmp_path, monkeypatch)


def _expected(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).sum(axis=1, keepdims=True) * np.arange(1, FEATURES + 1, dtype=np.float32)


def test_the_runner_round_trips_batches_through_device_buffers_without_torch(
    runner: TensorRTRunner, cudart: Path
) -> None:
    rng = np.random.default_rng(0)
    for batch in (1, 5, 2):
        x = rng.standard_normal((batch, 3, 4, 4)).astype(np.float32)
        np.testing.assert_allclose(runner(x), _expected(x), rtol=1e-5)
    assert ctypes.CDLL(str(cudart)).last_copy_kind() == 2  # the result came back device to host
    assert set(runner.engine.context.streams) == {runner.stream}  # every execution on the runner's own stream


def test_prepared_calls_of_two_batch_sizes_stay_valid_side_by_side(runner: TensorRTRunner) -> None:
    rng = np.random.default_rng(1)
    small, large = (rng.standard_normal((n, 3, 4, 4)).astype(np.float32) for n in (1, 8))
    bind_small, bind_large = runner._bind(small), runner._bind(large)
    for binding, x in ((bind_small, small), (bind_large, large), (bind_small, small)):
        binding.execute()
        np.testing.assert_allclose(binding.fetch(), _expected(x), rtol=1e-5)
        assert runner.engine.context.shape == x.shape


def test_device_memory_and_streams_are_given_back(
    cudart: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = ctypes.CDLL(str(cudart))
    gc.collect()
    before, streams = library.live_allocations(), library.live_streams()
    runner = _make_runner(cudart, tmp_path, monkeypatch)
    assert library.live_streams() == streams + 1
    runner(np.zeros((3, 3, 4, 4), np.float32))
    assert library.live_allocations() == before  # the call's buffers went back when it returned
    buffer = DeviceBuffer(runner.cuda, 64)
    assert buffer.address and library.live_allocations() == before + 1
    buffer.release()
    buffer.release()  # a second release frees nothing twice
    assert library.live_allocations() == before and buffer.address == 0
    DeviceBuffer(runner.cuda, 32)  # dropped at once: freed by its finalizer
    assert library.live_allocations() == before
    del runner
    gc.collect()
    assert library.live_streams() == streams


def test_cuda_errors_carry_the_runtime_s_message(cudart: Path) -> None:
    cuda = CudaRuntime(cudart)
    with pytest.raises(RuntimeError, match=r"cudaMalloc\(2199023255552\) failed with error 2: out of memory"):
        cuda.malloc(2 << 40)
    with pytest.raises(RuntimeError, match="cudaStreamSynchronize failed with error 400"):
        cuda.synchronize(0)


def test_a_missing_libcudart_says_what_was_tried_and_how_to_point_at_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTORY_CUDART", str(tmp_path / "custom" / "libcudart.so"))
    assert cudart_candidates()[0] == str(tmp_path / "custom" / "libcudart.so")
    with pytest.raises(ImportError, match=r"libcudart\) was not found; tried .*nowhere.*FACTORY_CUDART"):
        CudaRuntime(tmp_path / "nowhere.so")


def test_the_pip_wheels_libcudart_is_looked_for_where_each_wheel_puts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FACTORY_CUDART", raising=False)
    for wheel, name in (("cuda_runtime", "libcudart.so.12"), ("cu13", "libcudart.so.13")):
        (tmp_path / "nvidia" / wheel / "lib").mkdir(parents=True)
        (tmp_path / "nvidia" / wheel / "lib" / name).write_bytes(b"")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert cudart_candidates()[:2] == [
        str(tmp_path / "nvidia" / "cuda_runtime" / "lib" / "libcudart.so.12"),
        str(tmp_path / "nvidia" / "cu13" / "lib" / "libcudart.so.13"),
    ]


def test_a_foreign_engine_is_refused_by_path(cudart: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _stand_in_tensorrt())
    engine = tmp_path / "other.engine"
    engine.write_bytes(b"built elsewhere")
    with pytest.raises(ValueError, match=r"other\.engine: could not be deserialised"):
        TensorRTRunner(engine, contract=ModelContract(input_size=(4, 4)), cuda=CudaRuntime(cudart))
