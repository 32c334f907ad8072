"""insightface / MXNet RecordIO packs (``train.rec`` + ``train.idx``) in pure Python, both ways.

Layout (``../shared/REFERENCE.md`` §2): each record is one or more chunks ``magic | lrecord | payload | pad to 4``
with ``lrecord = cflag << 29 | length``. MXNet's writer splits a payload wherever the magic number appears at a
4-byte-aligned offset (cflag 1 = first, 2 = middle, 3 = last chunk) and drops those 4 bytes; the reader must put
them back between the chunks, or images come back corrupt with no error. The payload is an ``IRHeader``
(``<IfQQ``: flag, label, id, id2), ``flag`` float32 labels when ``flag > 0``, then the encoded image.

insightface packs start with a header record (key 0, flag 2, labels ``[A, B]``): images are keys ``1..A-1`` and
keys ``A..B-1`` describe identities (labels ``[first, end)`` of that identity's image keys). ``im2rec`` packs have no
header: every key is an image with its label in its own header.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from factory.data.formats.text import read_lines

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1


class RecordIOError(ValueError):
    """A RecordIO pack that cannot be read; the message names the file and the record."""


@dataclass(frozen=True)
class IRHeader:
    """MXNet's image-record header: ``flag`` extra labels follow it when ``flag > 0``."""

    flag: int
    label: float
    id: int
    id2: int


@dataclass(frozen=True)
class Record:
    """One decoded record: its header, its labels (the header's ``label`` when ``flag == 0``) and the image bytes."""

    header: IRHeader
    labels: np.ndarray
    image: bytes


def pack_payload(labels: float | np.ndarray, image: bytes, id: int = 0, id2: int = 0) -> bytes:
    """Payload of one record as ``mx.recordio.pack`` writes it (a label array goes after the header)."""
    labels_arr = np.atleast_1d(np.asarray(labels, dtype=np.float32))
    if labels_arr.size == 1 and np.ndim(labels) == 0:
        return _HEADER.pack(0, float(labels_arr[0]), id, id2) + image
    return _HEADER.pack(labels_arr.size, 0.0, id, id2) + labels_arr.tobytes() + image


def unpack_payload(payload: bytes, where: str = "record") -> Record:
    """Inverse of :func:`pack_payload`."""
    if len(payload) < _HEADER.size:
        raise RecordIOError(f"{where}: payload of {len(payload)} bytes is shorter than the 24-byte IRHeader")
    header = IRHeader(*_HEADER.unpack_from(payload))
    start = _HEADER.size
    if header.flag > 0:
        end = start + 4 * header.flag
        if end > len(payload):
            raise RecordIOError(f"{where}: header announces {header.flag} labels but the payload ends first")
        labels = np.frombuffer(payload[start:end], dtype="<f4").copy()
        start = end
    else:
        labels = np.array([header.label], dtype=np.float32)
    return Record(header=header, labels=labels, image=bytes(payload[start:]))


def _chunks(payload: bytes) -> list[tuple[int, bytes]]:
    """(cflag, chunk) list exactly as dmlc-core's ``RecordIOWriter::WriteRecord`` splits ``payload``."""
    chunks, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i : i + 4] == _MAGIC_BYTES:
            chunks.append((1 if start == 0 else 2, payload[start:i]))
            start = i + 4
    chunks.append((3 if start else 0, payload[start:]))
    return chunks


class RecordIOWriter:
    """Write a ``.rec``/``.idx`` pair the way MXNet does (split records included), atomically on close."""

    def __init__(self, rec: str | os.PathLike[str], idx: str | os.PathLike[str] | None = None) -> None:
        self.rec_path = Path(rec)
        self.idx_path = Path(idx) if idx is not None else self.rec_path.with_suffix(".idx")
        self._rec_tmp = self.rec_path.with_name(self.rec_path.name + ".partial")
        self._idx_tmp = self.idx_path.with_name(self.idx_path.name + ".partial")
        self._rec: BinaryIO = open(self._rec_tmp, "wb")
        self._index: list[tuple[int, int]] = []

    def write(self, key: int, payload: bytes) -> None:
        """Append one record under ``key``."""
        self._index.append((key, self._rec.tell()))
        for cflag, chunk in _chunks(payload):
            self._rec.write(_MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(chunk)) + chunk)
        self._rec.write(b"\0" * (-len(payload) % 4))

    def close(self) -> None:
        """Flush both files and move them into place."""
        self._rec.close()
        self._idx_tmp.write_text("".join(f"{k}\t{o}\n" for k, o in self._index), encoding="ascii")
        os.replace(self._rec_tmp, self.rec_path)
        os.replace(self._idx_tmp, self.idx_path)

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:  # nothing half-written is left behind
            self._rec.close()
            self._rec_tmp.unlink(missing_ok=True)


class RecordIOReader:
    """Random access to a ``.rec`` through its ``.idx``; insightface and ``im2rec`` layouts both understood."""

    def __init__(self, rec: str | os.PathLike[str], idx: str | os.PathLike[str] | None = None) -> None:
        self.rec_path = Path(rec)
        self.idx_path = Path(idx) if idx is not None else self.rec_path.with_suffix(".idx")
        for path, what in ((self.rec_path, "a RecordIO .rec file"), (self.idx_path, "its .idx index")):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file (expected {what})")
        self.size = self.rec_path.stat().st_size
        self.offsets = self._read_index()
        self._file: BinaryIO = open(self.rec_path, "rb")
        self._layout()

    def _read_index(self) -> dict[int, int]:
        offsets: dict[int, int] = {}
        lines = read_lines(self.idx_path, "'key<TAB>offset' lines", encoding="ascii")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            try:
                key, offset = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                raise RecordIOError(f"{self.idx_path}:{number}: expected 'key<TAB>offset', got {line!r}") from None
            if not 0 <= offset < self.size:
                raise RecordIOError(
                    f"{self.idx_path}:{number}: offset {offset} of key {key} is past the end of "
                    f"{self.rec_path} ({self.size} bytes): the .rec is truncated, or the .idx is another pack's "
                    "(expected offsets inside the .rec)"
                )
            offsets[key] = offset
        if not offsets:
            raise RecordIOError(f"{self.idx_path}: empty index")
        return offsets

    def _layout(self) -> None:
        """Image keys and, for insightface packs, the identity table from the header record."""
        first = self.record(min(self.offsets))
        self.identity_ranges: dict[int, tuple[int, int]] = {}
        if min(self.offsets) == 0 and first.header.flag == 2:
            start, stop = (int(v) for v in first.labels)
            if not 1 <= start <= stop:
                raise RecordIOError(
                    f"{self.rec_path}: record 0 is a header with labels [{start}, {stop}] "
                    "(expected [A, B] with 1 <= A <= B: images 1..A-1, identities A..B-1)"
                )
            self._check_header_keys(start, stop)
            self.image_keys = list(range(1, start))
            for identity, key in enumerate(range(start, stop)):
                labels = self.record(key).labels
                if len(labels) < 2:
                    raise RecordIOError(
                        f"{self.rec_path}: record {key} has {len(labels)} label(s) "
                        "(expected the identity record's [first image, end image))"
                    )
                self.identity_ranges[identity] = (int(labels[0]), int(labels[1]))
            self.layout = "insightface"
        else:
            self.image_keys = sorted(self.offsets)
            self.layout = "im2rec"

    def _check_header_keys(self, start: int, stop: int) -> None:
        """Every key the header record announces must be in the ``.idx``: a pack missing some is incomplete."""
        missing = sorted(set(range(1, stop)).difference(self.offsets))  # set arithmetic: packs hold millions of keys
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise RecordIOError(
                f"{self.idx_path}: the header record of {self.rec_path.name} names records 1..{stop - 1} "
                f"(images 1..{start - 1}, identities {start}..{stop - 1}) but the index lacks {len(missing)} of them: "
                f"{shown} (expected a .idx line for every record)"
            )

    def read_payload(self, key: int) -> bytes:
        """The re-joined payload of record ``key`` (magic bytes re-inserted between split chunks).

        The chunks' continuation flags must read ``0`` (whole) or ``1, 2..., 3`` (split), and the chunk after the
        record must not continue it: a flipped flag would otherwise glue two records together, or cut one short,
        without any error.
        """
        if key not in self.offsets:
            raise KeyError(f"{self.idx_path}: no record with key {key}")
        self._file.seek(self.offsets[key])
        parts: list[bytes] = []
        while True:
            at = self._file.tell()
            cflag, data = self._chunk(key, at)
            if (cflag in (2, 3)) != bool(parts):
                raise self._flag_error(
                    key, at, cflag, "a continuation (2 or 3)" if parts else "0 or 1 (a record's start)"
                )
            parts.append(data)
            if cflag in (0, 3):
                break
        self._check_not_continued(key)
        return _MAGIC_BYTES.join(parts)

    def _chunk(self, key: int, at: int) -> tuple[int, bytes]:
        """(cflag, data) of the chunk at the file position ``at``."""
        where = f"{self.rec_path}: record {key} at byte {at}"
        head = self._file.read(8)
        if len(head) < 8:
            raise RecordIOError(
                f"{where}: the file ends inside a chunk header: the .rec is truncated "
                f"(expected 8 header bytes, got {len(head)})"
            )
        magic, lrecord = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordIOError(f"{where}: bad magic 0x{magic:08X} (expected 0x{MAGIC:08X}; wrong .idx?)")
        cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
        if cflag > 3:
            raise RecordIOError(f"{where}: invalid continuation flag {cflag} (expected 0, 1, 2 or 3)")
        data = self._file.read(length + (-length % 4))
        if len(data) < length:
            raise RecordIOError(
                f"{where}: chunk of {length} bytes is cut off after {len(data)}: the .rec is truncated "
                "(expected the whole chunk before the end of the file)"
            )
        return cflag, data[:length]

    def _check_not_continued(self, key: int) -> None:
        """The chunk after a finished record starts a new one (flag 0 or 1), or the file ends."""
        at = self._file.tell()
        head = self._file.read(8)
        if len(head) == 8:
            magic, lrecord = struct.unpack("<II", head)
            if magic == MAGIC and lrecord >> 29 in (2, 3):
                raise self._flag_error(key, at, lrecord >> 29, "0 or 1 (the next record's start)")

    def _flag_error(self, key: int, at: int, cflag: int, expected: str) -> RecordIOError:
        return RecordIOError(
            f"{self.rec_path}: record {key} (at byte {self.offsets[key]}): chunk at byte {at} has continuation flag "
            f"{cflag} (expected {expected}): "
            "the continuation flags are inconsistent, so records would be glued together or cut short"
        )

    def record(self, key: int) -> Record:
        """Decoded record ``key``."""
        return unpack_payload(self.read_payload(key), f"{self.rec_path}: record {key}")

    def label(self, key: int) -> int:
        """Identity label of image ``key`` (float32 labels are exact integers up to 2^24)."""
        return int(self.record(key).labels[0])

    def __iter__(self) -> Iterator[tuple[int, Record]]:
        for key in self.image_keys:
            yield key, self.record(key)

    def __len__(self) -> int:
        return len(self.image_keys)

    def close(self) -> None:
        """Close the ``.rec`` file."""
        self._file.close()

    def __enter__(self) -> RecordIOReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def write_insightface_pack(
    rec: str | os.PathLike[str], images: list[bytes], labels: list[int], idx: str | os.PathLike[str] | None = None
) -> Path:
    """Write images grouped by identity as an insightface pack: header record, images, identity records."""
    order = sorted(range(len(images)), key=lambda i: labels[i])
    identities = sorted(set(labels))
    first_identity_key = len(images) + 1
    with RecordIOWriter(rec, idx) as writer:
        writer.write(0, pack_payload(np.array([first_identity_key, first_identity_key + len(identities)]), b""))
        ranges: dict[int, list[int]] = {}
        for key, i in enumerate(order, 1):
            writer.write(key, pack_payload(float(labels[i]), images[i]))
            ranges.setdefault(labels[i], []).append(key)
        for offset, identity in enumerate(identities):
            keys = ranges[identity]
            writer.write(first_identity_key + offset, pack_payload(np.array([keys[0], keys[-1] + 1]), b""))
    return Path(rec)
