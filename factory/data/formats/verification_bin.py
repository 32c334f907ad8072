"""insightface verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, RFW ``<Race>_test.bin``).

A ``.bin`` is a pickle of ``(bins, issame_list)``: ``2N`` encoded images (bytes, or numpy uint8 arrays of the
encoded bytes) and ``N`` booleans; pair ``k`` is ``bins[2k]``, ``bins[2k+1]``. Pickles can run code, so these files
are read with :class:`SafeUnpickler`, which admits only containers, bytes, bools, numbers and numpy arrays and
refuses every other global *before* anything is constructed. Files written under Python 2 are read with
``encoding="bytes"``.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from factory.files import atomic_path

_EXPECTED = "a pickled (bins, issame_list) pair, as insightface writes lfw.bin"

# The globals a pickled numpy array (any numpy version, protocol 2 to 5) needs, and nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy", "bool_"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2 (encode(text, "latin1")): no side effects
    ("__builtin__", "bytearray"),
    ("copy_reg", "_reconstructor"),  # Python 2 protocol-2 pickles of numpy arrays go through it
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The file asked for a global that a verification set never needs: refused, nothing was executed.

    A ``ValueError`` too, because it is bad input like any other unreadable file (the CLI answers it in one line).
    """


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals numpy arrays need."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; anything else raises :class:`UnsafePickleError`."""
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: it could run code "
                "(expected only numpy arrays and plain data: lists, tuples, bytes, bools, numbers)"
            )
        if module in ("copy_reg", "copyreg", "__builtin__"):
            module = {"copy_reg": "copyreg", "__builtin__": "builtins"}.get(module, module)
        return super().find_class(module, name)


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (``encoding="bytes"`` so Python 2 ``str`` stays bytes)."""
    return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()


def pickle_damage(stream: BinaryIO) -> str | None:
    """Why the pickle at ``stream``'s position is broken (``truncated ...`` or ``corrupt ...``), or ``None``.

    Walks the opcodes with :func:`pickletools.genops`, which decodes them without building or running anything, so
    it is safe on any file. A pickle whose opcodes run into the end of the data is truncated; one with an opcode
    that does not exist is corrupt at that byte. Leaves ``stream`` after the pickle's STOP when it is whole.
    """
    start = stream.tell()
    end = stream.seek(0, io.SEEK_END)
    stream.seek(start)
    try:
        for _ in pickletools.genops(stream):
            pass
    except ValueError as e:
        # genops raises ValueError both for a stream that ends early and for an unknown opcode; only the first
        # leaves the stream at its end.
        if stream.tell() >= end:
            return f"truncated: the pickle ends at byte {end} before its STOP opcode"
        return f"corrupt: {e}"
    return None


@dataclass
class VerificationBin:
    """Encoded pair images and labels of one verification set."""

    images: list[bytes]
    issame: np.ndarray

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VerificationBin:
        """Read and check a ``.bin``; every problem names the file (and the entry)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such verification .bin")
        data = path.read_bytes()
        if not data:
            raise ValueError(f"{path}: empty file (expected {_EXPECTED})")
        try:
            obj = safe_loads(data)
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{path}: {e}") from None
        # What a broken pickle raises: the unpickler's own errors, and those of the constructors it calls on junk.
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            damage = pickle_damage(io.BytesIO(data)) or f"not a readable pickle ({type(e).__name__}: {e})"
            raise ValueError(f"{path}: {damage} (expected {_EXPECTED})") from None
        if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
            raise ValueError(f"{path}: expected a pickled (bins, issame_list) pair, got {type(obj).__name__}")
        bins, issame = obj
        if not (isinstance(bins, (tuple, list)) and isinstance(issame, (tuple, list, np.ndarray))):
            raise ValueError(
                f"{path}: holds ({type(bins).__name__}, {type(issame).__name__}) (expected {_EXPECTED}: "
                "a list of encoded images and a list of booleans)"
            )
        images = []
        for i, entry in enumerate(bins):
            if isinstance(entry, (bytes, bytearray)):
                images.append(bytes(entry))
            elif isinstance(entry, np.ndarray) and entry.dtype == np.uint8:
                images.append(entry.tobytes())
            else:
                raise ValueError(f"{path}: entry {i} is {type(entry).__name__}, expected encoded image bytes")
        issame_arr = np.asarray([bool(v) for v in issame], dtype=bool)
        if len(images) != 2 * len(issame_arr):
            raise ValueError(f"{path}: {len(images)} images for {len(issame_arr)} pairs (expected two per pair)")
        return cls(images=images, issame=issame_arr)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as insightface does (a pickle of ``(list of bytes, list of bools)``), atomically."""
        with atomic_path(path) as tmp:
            tmp.write_bytes(pickle.dumps((self.images, [bool(v) for v in self.issame]), protocol=4))
        return Path(path)
