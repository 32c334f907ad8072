"""The few CUDA runtime calls a TensorRT engine needs, through ctypes on ``libcudart``: no torch, no cuda-python.

The on-target runner must need only the target's runtime and numpy. TensorRT's Python package takes device
addresses and a stream handle but allocates nothing, and the CUDA runtime library is on every machine that runs
TensorRT (JetPack puts it in ``/usr/local/cuda/lib64``; the pip wheels of TensorRT pull in ``nvidia-cuda-runtime``),
so its C API (stable since CUDA 4) is called directly. ``FACTORY_CUDART`` names the library where it is elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import weakref
from pathlib import Path

import numpy as np

_HOST_TO_DEVICE, _DEVICE_TO_HOST = 1, 2  # cudaMemcpyKind
_SONAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")
_SEARCH_DIRS = ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/aarch64-linux/lib", "/usr/lib/aarch64-linux-gnu")


def cudart_candidates() -> list[str]:
    """Where ``libcudart`` is looked for: ``FACTORY_CUDART``, the pip wheel, the loader's path, CUDA's dirs."""
    candidates = [os.environ["FACTORY_CUDART"]] if os.environ.get("FACTORY_CUDART") else []
    # pip wheels: nvidia-cuda-runtime-cu12 puts it in site-packages/nvidia/cuda_runtime/lib, the CUDA 13 wheels
    # (torch's own dependency) in site-packages/nvidia/cu13/lib
    for entry in sys.path:
        for lib in (
            Path(entry or ".") / "nvidia" / "cuda_runtime" / "lib",
            Path(entry or ".") / "nvidia" / "cu13" / "lib",
        ):
            if lib.is_dir():
                candidates += sorted(str(p) for p in lib.glob("libcudart.so*"))
    found = ctypes.util.find_library("cudart")
    candidates += [found] if found else []
    candidates += list(_SONAMES)
    candidates += [str(Path(d) / name) for d in _SEARCH_DIRS for name in _SONAMES]
    return list(dict.fromkeys(candidates))


class CudaRuntime:
    """Device memory, copies and one stream through the CUDA runtime API."""

    def __init__(self, library: str | os.PathLike[str] | None = None) -> None:
        tried = [str(library)] if library is not None else cudart_candidates()
        self.lib = None
        for candidate in tried:
            try:
                self.lib = ctypes.CDLL(candidate)
            except OSError:
                continue
            self.path = candidate
            break
        if self.lib is None:
            raise ImportError(
                "the CUDA runtime library (libcudart) was not found; tried " + ", ".join(tried) + ". Install "
                "nvidia-cuda-runtime-cu12 (or the CUDA 13 runtime wheel) or the CUDA toolkit, or set FACTORY_CUDART to "
                "the library's path"
            )
        lib = self.lib
        pointer, size = ctypes.c_void_p, ctypes.c_size_t
        lib.cudaMalloc.argtypes = [ctypes.POINTER(pointer), size]
        lib.cudaFree.argtypes = [pointer]
        lib.cudaMemcpyAsync.argtypes = [pointer, pointer, size, ctypes.c_int, pointer]
        lib.cudaStreamCreate.argtypes = [ctypes.POINTER(pointer)]
        lib.cudaStreamSynchronize.argtypes = [pointer]
        lib.cudaStreamDestroy.argtypes = [pointer]
        lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        for name in ("cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStreamCreate", "cudaStreamSynchronize",
                     "cudaStreamDestroy"):  # fmt: skip
            getattr(lib, name).restype = ctypes.c_int

    def _check(self, status: int, call: str) -> None:
        if status != 0:
            message = self.lib.cudaGetErrorString(status).decode(errors="replace")
            raise RuntimeError(f"CUDA {call} failed with error {status}: {message} ({self.path})")

    def malloc(self, nbytes: int) -> int:
        """A device allocation of ``nbytes`` (at least one byte); its address."""
        address = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(address), max(int(nbytes), 1)), f"cudaMalloc({nbytes})")
        return int(address.value or 0)

    def free(self, address: int, check: bool = True) -> None:
        """Free a device allocation; ``check=False`` for finalizers (at exit CUDA may already be unloading)."""
        status = self.lib.cudaFree(ctypes.c_void_p(address))
        if check:
            self._check(status, "cudaFree")

    def stream(self) -> int:
        """A new CUDA stream's handle."""
        handle = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(handle)), "cudaStreamCreate")
        return int(handle.value or 0)

    def destroy_stream(self, stream: int, check: bool = True) -> None:
        """Destroy a stream; ``check=False`` for finalizers."""
        status = self.lib.cudaStreamDestroy(ctypes.c_void_p(stream))
        if check:
            self._check(status, "cudaStreamDestroy")

    def synchronize(self, stream: int) -> None:
        """Wait until everything queued on ``stream`` has finished."""
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def to_device(self, address: int, array: np.ndarray, stream: int) -> None:
        """Copy a C-contiguous host array to ``address`` on ``stream`` (the caller keeps ``array`` alive until sync)."""
        self._check(
            self.lib.cudaMemcpyAsync(
                ctypes.c_void_p(address), ctypes.c_void_p(array.ctypes.data), array.nbytes, _HOST_TO_DEVICE,
                ctypes.c_void_p(stream),
            ),
            "cudaMemcpyAsync (host to device)",
        )  # fmt: skip

    def to_host(self, array: np.ndarray, address: int, stream: int) -> np.ndarray:
        """Copy ``array.nbytes`` from ``address`` into the C-contiguous ``array`` and wait for it."""
        self._check(
            self.lib.cudaMemcpyAsync(
                ctypes.c_void_p(array.ctypes.data), ctypes.c_void_p(address), array.nbytes, _DEVICE_TO_HOST,
                ctypes.c_void_p(stream),
            ),
            "cudaMemcpyAsync (device to host)",
        )  # fmt: skip
        self.synchronize(stream)
        return array


class DeviceBuffer:
    """One device allocation of ``nbytes``, freed by :meth:`release` or when its owner is collected."""

    def __init__(self, cuda: CudaRuntime, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.address = cuda.malloc(self.nbytes)
        self._free = weakref.finalize(self, cuda.free, self.address, False)

    def release(self) -> None:
        """Free the allocation now (a finalizer runs once, whether called here or at collection)."""
        self._free()
        self.address = 0
