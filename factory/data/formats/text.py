"""Reading the text files users hand us (pairs lists, image lists, group mappings, RFW pairs, RecordIO indexes).

A file in the wrong encoding must fail with its path, the line and the byte where decoding stopped, not with the
codec's bare ``'utf-8' codec can't decode byte 0xff in position 12``, which names neither.
"""

from __future__ import annotations

import os
from pathlib import Path


def read_lines(path: str | os.PathLike[str], expected: str, encoding: str = "utf-8") -> list[str]:
    """The lines of a text file, decoded strictly.

    Args:
        path: the file.
        expected: what the file should hold, for the error (e.g. ``"image1,image2,issame[,group] lines"``).
        encoding: ``utf-8`` for everything users write; ``ascii`` where the format says so (RecordIO ``.idx``).

    Raises:
        ValueError: the file does not decode; the message names ``path:LINE``, the byte offset and the byte.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode(encoding).splitlines()
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{path}:{line}: not {encoding.upper()} text (byte 0x{data[e.start]:02x} at offset {e.start}) "
            f"(expected {expected} in {encoding.upper()})"
        ) from None
