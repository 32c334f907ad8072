"""Readers and writers of the formats users own: RecordIO (split records included) and verification .bin."""

from __future__ import annotations

import io
import json
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


# ---------------------------------------------------------------------------------------------------------------
# Folders, RFW, alignment, conversion and the data CLI, on fixtures rendered from the procedural world
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faces() -> list[bytes]:
    from factory.data.world.renderer import ProceduralFaceWorld
    from factory.data.world.splits import unlabelled_batch

    images = unlabelled_batch(ProceduralFaceWorld(seed=0), 12, step=0, seed=0)["images"].numpy()
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img.transpose(1, 2, 0)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def write_bupt(root: Path, faces: list[bytes]) -> Path:
    for i, data in enumerate(faces):
        folder = root / ("groupA" if i < 6 else "groupB") / f"id{i // 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(data)
    return root


def test_bupt_folder_and_list_readers(faces: list[bytes], tmp_path: Path) -> None:
    from factory.data.formats.folders import read_group_mapping, read_image_folder, read_image_list

    index = read_image_folder(write_bupt(tmp_path / "bupt", faces))
    assert len(index) == 12 and index.identity_count() == 6 and index.group_names == ["groupA", "groupB"]
    flat = read_image_folder(tmp_path / "bupt" / "groupA")
    assert flat.group_names == ["all"] and flat.identity_count() == 3
    (tmp_path / "map.csv").write_text("id0,x\nid1,x\nid2,y\n")
    assert flat.with_groups(read_group_mapping(tmp_path / "map.csv")).group_names == ["x", "y"]
    (tmp_path / "list.csv").write_text(
        "path,identity,group\nbupt/groupA/id0/0.png,id0,A\nbupt/groupB/id3/6.png,id3,B\n"
    )
    listed = read_image_list(tmp_path / "list.csv")
    assert listed.identities == ["id0", "id3"] and listed.groups == ["A", "B"]
    (tmp_path / "bad.csv").write_text("bupt/groupA/id0/0.png,id0\nmissing.png,id9\n")
    with pytest.raises(FileNotFoundError, match=r"bad\.csv:2: .*missing\.png does not exist"):
        read_image_list(tmp_path / "bad.csv")


def test_alignment_maps_landmarks_onto_the_template() -> None:
    from factory.data.alignment import align_face, similarity_transform
    from factory.runtime.contract import ARCFACE_TEMPLATE

    template = np.array(ARCFACE_TEMPLATE)
    # A 250×250 "photo": the template rotated by 20°, scaled 1.7× and shifted, with a bright dot on each landmark.
    angle, scale, shift = np.radians(20), 1.7, np.array([60.0, 40.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = template @ (scale * rot).T + shift
    matrix = similarity_transform(points, template)
    assert np.abs(points @ matrix[:, :2].T + matrix[:, 2] - template).max() < 1e-9
    photo = np.zeros((250, 250, 3), np.uint8)
    for x, y in points.round().astype(int):
        photo[y - 2 : y + 3, x - 2 : x + 3] = 255
    aligned = align_face(photo, points)
    assert aligned.shape == (112, 112, 3)
    for x, y in template.round().astype(int):
        assert aligned[y - 1 : y + 2, x - 1 : x + 2].max() > 200  # every landmark landed on its template point


def test_rfw_round_trips_through_bin_and_back(faces: list[bytes], tmp_path: Path) -> None:
    from factory.data.formats.convert import convert_data
    from factory.data.formats.rfw import load_rfw

    issame = np.array([True, False, True, False, True, False])
    VerificationBin(faces, issame).save(tmp_path / "Asian_test.bin")
    convert_data(tmp_path / "Asian_test.bin", "rfw", tmp_path / "rfw")
    bench = load_rfw(tmp_path / "rfw")
    assert bench.group_names == ("Asian",) and bench.issame.tolist() == issame.tolist()
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b))).transpose(2, 0, 1) for b in faces])
    assert np.array_equal(bench.images, decoded)
    (written,) = convert_data(tmp_path / "rfw", "bin", tmp_path / "back")
    again = VerificationBin.load(written)
    assert written.name == "Asian_test.bin" and again.images == faces and again.issame.tolist() == issame.tolist()


def test_rfw_bad_pairs_line_and_missing_image(faces: list[bytes], tmp_path: Path) -> None:
    from factory.data.formats.convert import convert_data
    from factory.data.formats.rfw import load_rfw

    VerificationBin(faces[:4], np.array([True, False])).save(tmp_path / "Indian_test.bin")
    convert_data(tmp_path / "Indian_test.bin", "rfw", tmp_path / "rfw")
    pairs = tmp_path / "rfw" / "test" / "txts" / "Indian" / "Indian_pairs.txt"
    pairs.write_text(pairs.read_text() + "p1\tone\ttwo\n")
    with pytest.raises(ValueError, match=r"Indian_pairs\.txt:3: expected 'id n1 n2'"):
        load_rfw(tmp_path / "rfw")
    pairs.write_text("ghost\t1\t2\n")
    with pytest.raises(FileNotFoundError, match=r"ghost_0001\.jpg: image of a pair"):
        load_rfw(tmp_path / "rfw")


def test_recordio_to_imagefolder_keeps_bytes_and_identities(faces: list[bytes], tmp_path: Path) -> None:
    from factory.data.formats.convert import convert_data

    # A face whose PNG bytes hold the magic at an aligned offset exercises the split-record path end to end.
    tricky = faces[0][:16] + MAGIC_BYTES + faces[0][16:]
    images, labels = [*faces[:5], tricky], [0, 0, 1, 1, 2, 12]
    write_insightface_pack(tmp_path / "train.rec", images, labels)
    convert_data(tmp_path / "train.rec", "imagefolder", tmp_path / "folder")
    written = {(p.parent.name, p.read_bytes()) for p in (tmp_path / "folder").rglob("*.*")}
    assert written == {(str(lab), img) for lab, img in zip(labels, images, strict=True)}
    convert_data(tmp_path / "folder", "recordio", tmp_path / "again" / "train.rec")
    with RecordIOReader(tmp_path / "again" / "train.rec") as reader:
        back = sorted((reader.label(k), reader.record(k).image) for k in reader.image_keys)
    # Identity numbers come back in natural order: 0, 1, 2, 12 -> 0, 1, 2, 3.
    assert back == sorted(zip([0, 0, 1, 1, 2, 3], images, strict=True))
    assert (tmp_path / "again" / "property").read_text() == "4,112,112\n"


def test_data_cli_inspect_convert_preview(faces: list[bytes], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from factory.cli import main

    write_bupt(tmp_path / "bupt", faces)
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path / "bupt"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["format"] == "imagefolder" and info["images"] == 12 and info["identities"] == 6
    assert info["groups"] == {"groupA": 6, "groupB": 6} and info["decoded"] == 8 and info["failures"] == []
    VerificationBin(faces[:4], np.array([True, False])).save(tmp_path / "lfw.bin")
    info = json.loads(CliRunner().invoke(main, ["data", "inspect", str(tmp_path / "lfw.bin"), "--json"]).output)
    assert (info["format"], info["pairs"], info["genuine"], info["impostor"]) == ("bin", 2, 1, 1)
    result = CliRunner().invoke(
        main, ["data", "convert", str(tmp_path / "bupt"), "--to", "recordio", str(tmp_path / "p" / "t.rec")]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(CliRunner().invoke(main, ["data", "inspect", str(tmp_path / "p" / "t.rec"), "--json"]).output)
    assert (info["format"], info["images"], info["identities"], info["layout"]) == ("recordio", 12, 6, "insightface")
    result = CliRunner().invoke(main, ["data", "preview", str(tmp_path / "bupt"), "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "g.png") as grid:
        assert grid.size == (6 * 112 + 5 * 2, 2 * 112 + 2)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "id0").mkdir()
    (tmp_path / "broken" / "id0" / "x.png").write_bytes(b"not an image")
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path / "broken")])
    assert result.exit_code == 2 and "x.png: cannot decode image (cannot identify image file" in result.output


MXNET_PACK = Path(__file__).parent / "fixtures" / "mxnet_pack"  # written by MXNet 1.9.1: make_mxnet_pack.py


def test_pack_written_by_mxnet_converts_to_identical_images(tmp_path: Path) -> None:
    from factory.data.formats.convert import convert_data

    raw = (MXNET_PACK / "train.rec").read_bytes()
    assert [lrec >> 29 for lrec in _chunk_flags(raw)].count(1) == 1  # MXNet really split one record
    with RecordIOReader(MXNET_PACK / "train.rec") as reader:
        assert reader.layout == "insightface" and reader.image_keys == [1, 2, 3, 4, 5, 6]
        assert reader.identity_ranges == {0: (1, 3), 1: (3, 5), 2: (5, 7)}
        assert [reader.label(k) for k in reader.image_keys] == [0, 0, 1, 1, 2, 2]
    convert_data(MXNET_PACK / "train.rec", "imagefolder", tmp_path / "out")
    for key in range(1, 7):
        expected = (MXNET_PACK / f"expected_{key}.png").read_bytes()
        assert (tmp_path / "out" / str((key - 1) // 2) / f"{key}.png").read_bytes() == expected, key


def test_our_writer_reproduces_mxnet_bytes(tmp_path: Path) -> None:
    with RecordIOReader(MXNET_PACK / "train.rec") as reader, RecordIOWriter(tmp_path / "t.rec") as writer:
        for key in sorted(reader.offsets):
            writer.write(key, reader.read_payload(key))
    assert (tmp_path / "t.rec").read_bytes() == (MXNET_PACK / "train.rec").read_bytes()
    assert (tmp_path / "t.idx").read_text() == (MXNET_PACK / "train.idx").read_text()


def _chunk_flags(raw: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(raw):
        _, lrec = struct.unpack_from("<II", raw, pos)
        out.append(lrec)
        length = lrec & ((1 << 29) - 1)
        pos += 8 + length + (-length % 4)
    return out
