"""Readers and writers of the formats users own: RecordIO (split records included) and verification .bin."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factory.data.formats.recordio import (
    MAGIC,
    RecordIOError,
    RecordIOReader,
    RecordIOWriter,
    pack_payload,
    unpack_payload,
    write_insightface_pack,
)
from factory.data.formats.verification_bin import UnsafePickleError, VerificationBin, safe_loads

MAGIC_BYTES = struct.pack("<I", MAGIC)


def png(seed: int, size: int = 16) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def test_payload_round_trip_scalar_and_array_labels() -> None:
    record = unpack_payload(pack_payload(7.0, b"img", id=3))
    assert record.header.flag == 0 and record.labels.tolist() == [7.0] and record.image == b"img"
    assert record.header.id == 3
    record = unpack_payload(pack_payload(np.array([1, 5]), b""))
    assert record.header.flag == 2 and record.labels.tolist() == [1.0, 5.0]
    with pytest.raises(RecordIOError, match="shorter than the 24-byte IRHeader"):
        unpack_payload(b"abc")


def test_split_record_is_rejoined_with_the_magic_bytes(tmp_path: Path) -> None:
    # A payload holding the magic at 4-byte-aligned offsets is split into chunks 1, 2, 3 by the writer, exactly as
    # dmlc-core does; the reader must give back the identical bytes.
    image = b"ABCD" + MAGIC_BYTES + b"EFGH" + MAGIC_BYTES + b"tail!"
    payload = pack_payload(4.0, image)
    with RecordIOWriter(tmp_path / "t.rec") as writer:
        writer.write(0, pack_payload(1.0, b"first"))
        writer.write(1, payload)
        writer.write(2, pack_payload(2.0, b"last"))
    raw = (tmp_path / "t.rec").read_bytes()
    offset = int((tmp_path / "t.idx").read_text().splitlines()[1].split("\t")[1])
    flags = []
    pos = offset
    while True:
        magic, lrec = struct.unpack_from("<II", raw, pos)
        assert magic == MAGIC
        flags.append(lrec >> 29)
        length = lrec & ((1 << 29) - 1)
        pos += 8 + length + (-length % 4)
        if flags[-1] == 3:
            break
    assert flags == [1, 2, 3]  # the writer really split it
    with RecordIOReader(tmp_path / "t.rec") as reader:
        assert reader.layout == "im2rec" and reader.image_keys == [0, 1, 2]
        assert reader.record(1).image == image
        assert [reader.label(k) for k in reader.image_keys] == [1, 4, 2]


def test_insightface_pack_header_and_identity_ranges(tmp_path: Path) -> None:
    images = [png(i) for i in range(7)]
    labels = [2, 0, 1, 0, 2, 2, 1]
    write_insightface_pack(tmp_path / "train.rec", images, labels)
    with RecordIOReader(tmp_path / "train.rec") as reader:
        assert reader.layout == "insightface" and len(reader) == 7
        assert reader.identity_ranges == {0: (1, 3), 1: (3, 5), 2: (5, 8)}
        got = sorted((reader.label(k), reader.record(k).image) for k in reader.image_keys)
        assert got == sorted(zip(labels, images, strict=True))


def test_corrupt_packs_name_the_file_and_record(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path / "a.rec") as writer:
        writer.write(0, pack_payload(0.0, b"x" * 100))
        writer.write(1, pack_payload(1.0, b"y" * 100))
    raw = (tmp_path / "a.rec").read_bytes()
    (tmp_path / "cut.rec").write_bytes(raw[:-40])
    (tmp_path / "cut.idx").write_bytes((tmp_path / "a.idx").read_bytes())
    with pytest.raises(RecordIOError, match=r"cut\.rec: record 1 at byte \d+: chunk of 124 bytes is cut off"):
        RecordIOReader(tmp_path / "cut.rec").record(1)
    (tmp_path / "bad.rec").write_bytes(b"\0" * 4 + raw[4:])
    (tmp_path / "bad.idx").write_bytes((tmp_path / "a.idx").read_bytes())
    with pytest.raises(RecordIOError, match=r"bad\.rec: record 0 at byte 0: bad magic 0x00000000"):
        RecordIOReader(tmp_path / "bad.rec")
    (tmp_path / "far.rec").write_bytes(raw)
    (tmp_path / "far.idx").write_text("0\t0\n1\t999999\n")
    with pytest.raises(RecordIOError, match=r"far\.idx:2: offset 999999 of key 1 is past the end"):
        RecordIOReader(tmp_path / "far.rec")
    (tmp_path / "junk.idx").write_text("0 zero\n")
    (tmp_path / "junk.rec").write_bytes(raw)
    with pytest.raises(RecordIOError, match=r"junk\.idx:1: expected 'key<TAB>offset'"):
        RecordIOReader(tmp_path / "junk.rec")
    with pytest.raises(FileNotFoundError, match=r"nothere\.rec"):
        RecordIOReader(tmp_path / "nothere.rec")


def test_verification_bin_round_trip_bytes_and_numpy_entries(tmp_path: Path) -> None:
    images = [png(i) for i in range(4)]
    VerificationBin(images, np.array([True, False])).save(tmp_path / "lfw.bin")
    loaded = VerificationBin.load(tmp_path / "lfw.bin")
    assert loaded.images == images and loaded.issame.tolist() == [True, False]
    # Older sets store numpy uint8 arrays of the encoded bytes, and numpy bools.
    as_arrays = ([np.frombuffer(b, np.uint8) for b in images], [np.bool_(True), np.bool_(False)])
    (tmp_path / "np.bin").write_bytes(pickle.dumps(as_arrays, protocol=2))
    assert VerificationBin.load(tmp_path / "np.bin").images == images


def test_python2_pickle_is_read_with_bytes_encoding() -> None:
    # Protocol 2 as Python 2 writes a str: SHORT_BINSTRING, which must come back as bytes, not be decoded as text.
    data = b"\x80\x02]q\x00(U\x03\xff\xd8\xffq\x01U\x01aq\x02e\x85q\x03."
    assert safe_loads(data) == ([b"\xff\xd8\xff", b"a"],)


def test_bin_that_would_run_a_command_is_refused_unexecuted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([Exploit()], [True])))
    with pytest.raises(UnsafePickleError, match=r"evil\.bin: refused to load global (posix|os)\.system"):
        VerificationBin.load(tmp_path / "evil.bin")
    assert not marker.exists()
    (tmp_path / "other.bin").write_bytes(pickle.dumps({"not": "a pair"}))
    with pytest.raises(ValueError, match=r"other\.bin: expected a pickled \(bins, issame_list\) pair"):
        VerificationBin.load(tmp_path / "other.bin")
    (tmp_path / "odd.bin").write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(ValueError, match=r"odd\.bin: 3 images for 1 pairs"):
        VerificationBin.load(tmp_path / "odd.bin")
    (tmp_path / "entry.bin").write_bytes(pickle.dumps(([b"a", 5], [True])))
    with pytest.raises(ValueError, match=r"entry\.bin: entry 1 is int"):
        VerificationBin.load(tmp_path / "entry.bin")
