"""Reading the ``.npz`` archives users hand us (precomputed embeddings, benchmarks), never unpickling.

``np.load`` answers a bare ``.npy``, a truncated archive or an object array with errors that name neither the file nor
what it should hold (or with a ``TypeError`` deep in the caller). Here the file's first bytes say what it is, the
archive is opened with :mod:`zipfile`, and every member's ``.npy`` header is read before its data, so an object array
(which only unpickling could build) is refused without a byte of it being interpreted.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"


def read_npz(path: str | os.PathLike[str], expected: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, by name.

    Args:
        path: the archive (``np.savez`` / ``np.savez_compressed`` output).
        expected: what it should hold, for the errors (e.g. ``"embeddings 2N×D and issame N"``).

    Raises:
        ValueError: empty, a ``.npy``, not an archive, truncated, corrupt, or holding object arrays; the message
            names ``path`` and ``expected``.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if not head:
        raise ValueError(f"{path}: empty file (expected an .npz archive of {expected})")
    if head.startswith(_NPY_MAGIC):
        raise ValueError(f"{path}: a .npy file holds one bare array (expected an .npz archive of {expected})")
    if not head.startswith(_ZIP_MAGIC):
        raise ValueError(f"{path}: not an .npz archive (expected an .npz archive of {expected})")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        # A zip's table of contents is at its end: a file that starts like a zip but has none was cut short.
        raise ValueError(
            f"{path}: truncated: the .npz (zip) archive has no central directory at its end "
            f"(expected an .npz archive of {expected})"
        ) from None
    with archive:
        return {name.removesuffix(".npy"): _read_member(path, archive, name, expected) for name in archive.namelist()}


def _read_member(path: Path, archive: zipfile.ZipFile, name: str, expected: str) -> np.ndarray:
    key = name.removesuffix(".npy")
    where = f"{path}: array {key!r}"
    try:
        with archive.open(name) as f:
            dtype = _header_dtype(f)
            if dtype.hasobject:
                raise ValueError(
                    f"{where} holds Python objects ({dtype}); refused, since reading it would unpickle "
                    f"(expected numeric or string arrays: {expected})"
                )
        with archive.open(name) as f:
            return npy_format.read_array(f, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ValueError(f"{where}: corrupt archive member ({e}) (expected an .npz archive of {expected})") from None
    except ValueError as e:
        if str(e).startswith(where):
            raise
        raise ValueError(f"{where}: not a readable .npy array ({e}) (expected {expected})") from None


def _header_dtype(f: IO[bytes]) -> np.dtype:
    """The dtype in a ``.npy`` header (format 1.0, 2.0 or 3.0), read without touching the data."""
    version = npy_format.read_magic(f)
    # 3.0 differs from 2.0 only in allowing UTF-8 field names, which the 2.0 reader parses the same way.
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    _, _, dtype = read_header(f)
    return dtype
