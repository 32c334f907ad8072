"""Corrupt and foreign files: one line naming the file and what was expected, exit 2, never a traceback (issue 9).

Every row builds its bad file in the test's own folder (the current directory), runs the real CLI on it and checks,
through :func:`bad_input.check_case`, the exit code, the names in the message, that the message is one line, and that
nothing was written where the command refused to work.
"""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from bad_input import EXIT_INPUT, Case, check_case
from helpers import encode_png, procedural_bin
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from factory.data.formats.recordio import MAGIC, write_insightface_pack
from factory.data.formats.verification_bin import VerificationBin
from factory.export.openvino import convert_to_openvino
from factory.runtime.contract import CONTRACT_KEY, ModelContract

# ---------------------------------------------------------------------------------------------------------------
# Tiny real files to break
# ---------------------------------------------------------------------------------------------------------------

EMBED_OUT = "out.npz"


def face(seed: int = 0) -> bytes:
    """PNG bytes of an aligned-size (112×112) noise image: decodes like a face crop, costs nothing to make."""
    return encode_png(np.random.default_rng(seed).integers(0, 256, (3, 112, 112), dtype=np.uint8))


def faces(tmp: Path, n: int = 2) -> Path:
    folder = tmp / "faces"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        (folder / f"f{i}.png").write_bytes(face(i))
    return folder


def tiny_onnx(path: Path) -> Path:
    """A real 8-d ONNX embedder (mean pool + matmul) with the factory contract, built without torch's exporter."""
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 8])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.metadata_props.append(
        onnx.StringStringEntryProto(key=CONTRACT_KEY, value=ModelContract(embedding_dim=8).to_json())
    )
    onnx.save(model, str(path))
    return path


def tiny_ir(tmp: Path) -> Path:
    return convert_to_openvino(tiny_onnx(tmp / "src.onnx"), tmp / "model.xml")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


def tiny_torchscript(path: Path) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates tracing; the file is still TorchScript
        torch.jit.trace(Tiny().eval(), torch.zeros(1, 3, 112, 112)).save(str(path))
    return path


def cut(path: Path, keep: float = 0.5) -> Path:
    """Truncate ``path`` in place to ``keep`` of its bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width×height`` pixels: how a decompression bomb looks before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def pack(tmp: Path, name: str = "train") -> Path:
    """An insightface RecordIO pack of 4 images of 2 identities: header record 0, images 1-4, identities 5-6."""
    return write_insightface_pack(tmp / f"{name}.rec", [face(i) for i in range(4)], [0, 0, 1, 1])


def idx_offsets(rec: Path) -> dict[int, int]:
    lines = rec.with_suffix(".idx").read_text().splitlines()
    return {int(k): int(o) for k, o in (line.split("\t") for line in lines)}


def small_bin(path: Path) -> Path:
    return VerificationBin([face(i) for i in range(4)], np.array([True, False])).save(path)


def embeddings_npz(path: Path, **override: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"embeddings": rng.normal(size=(40, 8)).astype(np.float32), "issame": np.tile([True, False], 10)}
    np.savez(path, **{**arrays, **override})
    return path


class Exploit:
    """Unpickling this runs a shell command: the payload of a malicious .bin or .pth."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (__import__("os").system, (f"touch {self.marker}",))


def nothing_at(*names: str) -> Callable[[Path], None]:
    """``after``: none of ``names`` (relative to the test folder) exists."""

    def check(tmp: Path) -> None:
        for name in names:
            assert not (tmp / name).exists(), f"{name} was written"

    return check


def no_teacher(tmp: Path) -> None:
    assert not list(tmp.glob("runs/*/stages/teacher/*/stage.json")), "a teacher stage finished"


# ---------------------------------------------------------------------------------------------------------------
# Cases: make(tmp) writes the bad input and returns the CLI arguments
# ---------------------------------------------------------------------------------------------------------------


def embed_with(artifact: str) -> list[str]:
    return ["embed", "faces", "--artifact", artifact, "-o", EMBED_OUT]


def make_onnx_corrupt(tmp: Path) -> list[str]:
    faces(tmp)
    cut(tiny_onnx(tmp / "model.onnx"))
    return embed_with("model.onnx")


def make_onnx_empty(tmp: Path) -> list[str]:
    small_bin(tmp / "lfw.bin")
    (tmp / "empty.onnx").write_bytes(b"")
    return ["eval", "lfw.bin", "--artifact", "empty.onnx"]


def make_torchscript_truncated(tmp: Path) -> list[str]:
    faces(tmp)
    cut(tiny_torchscript(tmp / "model.ts"))
    return embed_with("model.ts")


def make_torchscript_foreign(tmp: Path) -> list[str]:
    faces(tmp)
    (tmp / "model.jit").write_text("not a TorchScript archive\n")
    return embed_with("model.jit")


def make_torchscript_pt_truncated(tmp: Path) -> list[str]:
    # A .pt TorchScript cut short no longer looks like TorchScript: it is judged as a checkpoint, and still truncated.
    faces(tmp)
    cut(tiny_torchscript(tmp / "teacher.pt"), 0.7)
    return embed_with("teacher.pt")


def make_ir_garbage_xml(tmp: Path) -> list[str]:
    faces(tmp)
    tiny_ir(tmp)
    (tmp / "model.xml").write_text("<<< not xml")
    return embed_with("model.xml")


def make_ir_broken_xml(tmp: Path) -> list[str]:
    faces(tmp)
    cut(tiny_ir(tmp), 0.6)  # XML cut mid-element; the .bin is fine
    return embed_with("model.xml")


def make_ir_bin_missing(tmp: Path) -> list[str]:
    faces(tmp)
    tiny_ir(tmp).with_suffix(".bin").unlink()
    return embed_with("model.xml")


def make_ir_bin_truncated(tmp: Path) -> list[str]:
    faces(tmp)
    cut(tiny_ir(tmp).with_suffix(".bin"))
    return embed_with("model.xml")


def make_teacher_checkpoint_corrupt(tmp: Path) -> list[str]:
    (tmp / "recipe.yaml").write_text("name: t\n")
    cut(tiny_onnx(tmp / "teacher.onnx"))
    sets = ["teacher.checkpoint=teacher.onnx", "data.benchmark_pairs_per_group=40", "data.calibration.images=4"]
    sets += ["data.preview_identities=1", "data.preview_samples=1"]
    return ["build", "recipe.yaml", "--until", "teacher", "--no-progress", *[a for s in sets for a in ("--set", s)]]


def calibration_build(benchmark: str, calibration: str) -> list[str]:
    """``factory build --until data`` of a real benchmark with a files calibration source."""
    Path("recipe.yaml").write_text("name: c\n")
    sets = [
        f"data.benchmark={benchmark}",
        "data.calibration.source.kind=files",
        f"data.calibration.source.path={calibration}",
    ]
    sets += ["data.calibration.images=4", "data.calibration.balance=source", "data.preview_identities=1"]
    sets += ["data.preview_samples=1"]
    return ["build", "recipe.yaml", "--until", "data", "--no-progress", *[a for s in sets for a in ("--set", s)]]


def make_calibration_of_benchmark_images(tmp: Path) -> list[str]:
    procedural_bin(tmp / "bench.bin")
    (tmp / "faces").mkdir()
    for i, encoded in enumerate(VerificationBin.load(tmp / "bench.bin").images[:6]):
        (tmp / "faces" / f"{i}.png").write_bytes(encoded)
    return calibration_build("bench.bin", "faces")


def make_calibration_folder_holds_benchmark(tmp: Path) -> list[str]:
    (tmp / "data").mkdir()
    procedural_bin(tmp / "data" / "bench.bin")
    return calibration_build("data/bench.bin", "data")


def no_data_stage(tmp: Path) -> None:
    assert not list(tmp.glob("runs/*/stages/data/*/stage.json")), "a data stage finished"


def weights(name: str) -> list[str]:
    return ["embed", "faces", "--model", "mobilefacenet", "--weights", name, "-o", EMBED_OUT]


def make_pth_truncated(tmp: Path) -> list[str]:
    faces(tmp)
    torch.save(Tiny().state_dict(), tmp / "backbone.pth")
    cut(tmp / "backbone.pth")
    return weights("backbone.pth")


def make_pth_legacy_truncated(tmp: Path) -> list[str]:
    faces(tmp)
    torch.save(Tiny().state_dict(), tmp / "old.pth", _use_new_zipfile_serialization=False)
    cut(tmp / "old.pth", 0.3)
    return weights("old.pth")


def make_pth_empty(tmp: Path) -> list[str]:
    faces(tmp)
    (tmp / "empty.pth").write_bytes(b"")
    return weights("empty.pth")


def make_pth_needs_code(tmp: Path) -> list[str]:
    faces(tmp)
    torch.save({"state_dict": Tiny().state_dict(), "hook": Exploit(str(tmp / "pwned"))}, tmp / "evil.pth")
    return weights("evil.pth")


def make_pth_wrong_architecture(tmp: Path) -> list[str]:
    faces(tmp)
    torch.save(Tiny().state_dict(), tmp / "tiny.pth")
    return weights("tiny.pth")


def make_safetensors_truncated(tmp: Path) -> list[str]:
    from safetensors.torch import save_file

    faces(tmp)
    save_file({k: v.contiguous() for k, v in Tiny().state_dict().items()}, str(tmp / "model.safetensors"))
    cut(tmp / "model.safetensors", 0.9)
    return weights("model.safetensors")


def make_safetensors_empty(tmp: Path) -> list[str]:
    faces(tmp)
    (tmp / "model.safetensors").write_bytes(b"")
    return weights("model.safetensors")


def make_rec_missing_records(tmp: Path) -> list[str]:
    rec = pack(tmp)
    idx = rec.with_suffix(".idx")
    idx.write_text("".join(f"{line}\n" for line in idx.read_text().splitlines() if not line.startswith("3\t")))
    return ["data", "inspect", "train.rec"]


def make_rec_flipped_flag(tmp: Path) -> list[str]:
    # Record 2 marked as the first chunk of a split record: a reader that trusts it glues record 3 onto it.
    rec = pack(tmp)
    raw = bytearray(rec.read_bytes())
    at = idx_offsets(rec)[2]
    magic, lrecord = struct.unpack_from("<II", raw, at)
    assert magic == MAGIC and lrecord >> 29 == 0
    struct.pack_into("<II", raw, at, magic, (1 << 29) | lrecord)
    rec.write_bytes(bytes(raw))
    return ["data", "convert", "train.rec", "--to", "imagefolder", "folder"]


def make_rec_truncated(tmp: Path) -> list[str]:
    rec = pack(tmp)
    rec.write_bytes(rec.read_bytes()[: idx_offsets(rec)[4] + 100])  # cut inside image 4: later offsets point past
    return ["data", "convert", "train.rec", "--to", "imagefolder", "folder"]


def make_rec_truncated_in_last_record(tmp: Path) -> list[str]:
    rec = pack(tmp)
    rec.write_bytes(rec.read_bytes()[:-8])  # the last record (identity 1, key 6) loses its label bytes
    return ["data", "inspect", "train.rec"]


def make_idx_not_ascii(tmp: Path) -> list[str]:
    rec = pack(tmp)
    idx = rec.with_suffix(".idx")
    idx.write_bytes(idx.read_bytes().replace(b"1\t", b"\xb91\t", 1))
    return ["data", "inspect", "train.rec"]


def make_bin_empty(tmp: Path) -> list[str]:
    (tmp / "lfw.bin").write_bytes(b"")
    return ["eval", "lfw.bin", "--model", "mobilefacenet"]


def make_bin_truncated(tmp: Path) -> list[str]:
    cut(small_bin(tmp / "lfw.bin"))
    return ["data", "inspect", "lfw.bin"]


def make_bin_malicious(tmp: Path) -> list[str]:
    (tmp / "lfw.bin").write_bytes(pickle.dumps(([Exploit(str(tmp / "pwned"))], [True]), protocol=2))
    return ["data", "convert", "lfw.bin", "--to", "rfw", "rfw"]


def eval_embeddings(name: str) -> list[str]:
    return ["eval", "--embeddings", name, "--bootstrap", "10"]


def make_npy_for_npz(tmp: Path) -> list[str]:
    np.save(tmp / "emb.npy", np.ones((40, 8), np.float32))
    return eval_embeddings("emb.npy")


def make_npz_strings(tmp: Path) -> list[str]:
    embeddings_npz(tmp / "e.npz", embeddings=np.full((40, 8), "0.5"))
    return eval_embeddings("e.npz")


def make_npz_complex(tmp: Path) -> list[str]:
    embeddings_npz(tmp / "e.npz", embeddings=np.ones((40, 8), np.complex64))
    return eval_embeddings("e.npz")


def make_npz_zero_length(tmp: Path) -> list[str]:
    embeddings_npz(tmp / "e.npz", embeddings=np.zeros((0, 8), np.float32), issame=np.zeros(0, bool))
    return eval_embeddings("e.npz")


def make_npz_zero_row(tmp: Path) -> list[str]:
    rows = np.random.default_rng(0).normal(size=(40, 8))
    rows[7] = 0.0
    embeddings_npz(tmp / "e.npz", embeddings=rows)
    return eval_embeddings("e.npz")


def make_npz_wrong_shapes(tmp: Path) -> list[str]:
    embeddings_npz(tmp / "e.npz", issame=np.tile([True, False], 7))
    return eval_embeddings("e.npz")


def make_npz_objects(tmp: Path) -> list[str]:
    issame = np.empty(20, dtype=object)
    issame[:] = [True, "no"] * 10
    embeddings_npz(tmp / "e.npz", issame=issame)
    return eval_embeddings("e.npz")


def make_npz_truncated(tmp: Path) -> list[str]:
    cut(embeddings_npz(tmp / "e.npz"))
    return eval_embeddings("e.npz")


def make_image_bomb(tmp: Path) -> list[str]:
    (tmp / "faces").mkdir()
    (tmp / "faces" / "bomb.png").write_bytes(png_header(10_000, 10_000))  # PIL only warns at this size
    return ["embed", "faces", "--model", "mobilefacenet", "-o", EMBED_OUT]


def make_image_absurd(tmp: Path) -> list[str]:
    (tmp / "set" / "id0").mkdir(parents=True)
    (tmp / "set" / "id0" / "huge.png").write_bytes(png_header(1 << 20, 1 << 20))  # PIL raises at this size
    return ["data", "preview", "set", "--out", "grid.png"]


def make_image_undecodable(tmp: Path) -> list[str]:
    folder = faces(tmp)
    (folder / "f1.png").write_bytes(face(1)[:300])
    return ["embed", "faces", "--model", "mobilefacenet", "-o", EMBED_OUT]


def make_pairs_dotdot(tmp: Path) -> list[str]:
    faces(tmp)
    (tmp / "lists").mkdir()
    (tmp / "lists" / "pairs.csv").write_text("../faces/f0.png,../faces/f1.png,1\n")
    return ["eval", "lists/pairs.csv", "--model", "mobilefacenet"]


def make_pairs_absolute(tmp: Path) -> list[str]:
    faces(tmp)
    (tmp / "pairs.csv").write_text(f"faces/f0.png,faces/f1.png,1\nfaces/f0.png,{tmp / 'faces' / 'f1.png'},0\n")
    return ["eval", "pairs.csv", "--model", "mobilefacenet"]


def make_rfw_identity_path(tmp: Path) -> list[str]:
    from factory.data.formats.convert import convert_data

    convert_data(small_bin(tmp / "Asian_test.bin"), "rfw", tmp / "rfw")
    pairs = tmp / "rfw" / "test" / "txts" / "Asian" / "Asian_pairs.txt"
    pairs.write_text(pairs.read_text() + "../../../../faces\t1\t2\n")
    return ["eval", "rfw", "--model", "mobilefacenet"]


def make_pairs_not_utf8(tmp: Path) -> list[str]:
    faces(tmp)
    (tmp / "pairs.csv").write_bytes(b"faces/f0.png,faces/f1.png,1\nfaces/f\xe9.png,faces/f1.png,0\n")
    return ["eval", "pairs.csv", "--model", "mobilefacenet"]


def make_list_not_utf8(tmp: Path) -> list[str]:
    faces(tmp)
    (tmp / "train.csv").write_bytes(b"path,identity\nfaces/f0.png,id0\nfaces/f1.png,Jos\xe9\n")
    return ["data", "inspect", "train.csv"]


def make_groups_not_utf8(tmp: Path) -> list[str]:
    for identity in ("id0", "id1"):
        (tmp / "set" / identity).mkdir(parents=True)
        (tmp / "set" / identity / "a.png").write_bytes(face())
    (tmp / "groups.csv").write_bytes(b"id0,north\nid1,s\xfcd\n")
    return ["data", "mix", "real=set:1.0", "--groups", "groups.csv", "--out", "mix.csv"]


def make_embed_list_not_utf8(tmp: Path) -> list[str]:
    faces(tmp)
    (tmp / "images.txt").write_bytes(b"faces/f0.png\n\xfffaces/f1.png\n")
    return ["embed", "images.txt", "--model", "mobilefacenet", "-o", EMBED_OUT]


NONEMPTY = {"notes.txt": b"keep me\n", "old/0.png": b"old bytes"}


def make_convert_into_nonempty(tmp: Path) -> list[str]:
    pack(tmp)
    for name, data in NONEMPTY.items():
        (tmp / "folder" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "folder" / name).write_bytes(data)
    return ["data", "convert", "train.rec", "--to", "imagefolder", "folder"]


def folder_unchanged(tmp: Path) -> None:
    found = {
        p.relative_to(tmp / "folder").as_posix(): p.read_bytes() for p in (tmp / "folder").rglob("*") if p.is_file()
    }
    assert found == NONEMPTY


def make_convert_over_existing_pack(tmp: Path) -> list[str]:
    (tmp / "set" / "id0").mkdir(parents=True)
    (tmp / "set" / "id0" / "a.png").write_bytes(face())
    pack(tmp, "other")
    return ["data", "convert", "set", "--to", "recordio", "other.rec"]


def pack_unchanged(tmp: Path) -> None:
    (tmp / "fresh").mkdir()
    expected = write_insightface_pack(tmp / "fresh" / "other.rec", [face(i) for i in range(4)], [0, 0, 1, 1])
    assert (tmp / "other.rec").read_bytes() == expected.read_bytes()


def expecting(what: str) -> str:
    return f"(expected {what}"


CASES = [
    # Models given as --artifact (and as teacher.checkpoint, through the same load_any_model)
    Case(
        "onnx-corrupt",
        make_onnx_corrupt,
        EXIT_INPUT,
        ["model.onnx: corrupt or not an ONNX model", expecting("an ONNX model")],
        nothing_at(EMBED_OUT),
        max_lines=1,
    ),
    Case("onnx-empty", make_onnx_empty, EXIT_INPUT, ["empty.onnx", expecting("an ONNX model")], max_lines=1),
    Case(
        "torchscript-truncated",
        make_torchscript_truncated,
        EXIT_INPUT,
        ["model.ts: truncated", expecting("a TorchScript archive")],
        nothing_at(EMBED_OUT),
        max_lines=1,
    ),
    Case(
        "torchscript-foreign",
        make_torchscript_foreign,
        EXIT_INPUT,
        ["model.jit: not a torch file", expecting("a TorchScript archive")],
        max_lines=1,
    ),
    Case(
        "torchscript-pt-truncated",
        make_torchscript_pt_truncated,
        EXIT_INPUT,
        ["teacher.pt is not a loadable checkpoint: truncated", expecting("a torch checkpoint")],
        nothing_at(EMBED_OUT),
        max_lines=1,
    ),
    Case(
        "openvino-xml-garbage",
        make_ir_garbage_xml,
        EXIT_INPUT,
        ["model.xml: not an OpenVINO IR", expecting("an OpenVINO IR")],
        nothing_at(EMBED_OUT),
        max_lines=1,
    ),
    Case(
        "openvino-xml-cut",
        make_ir_broken_xml,
        EXIT_INPUT,
        ["model.xml: not a loadable OpenVINO IR", expecting("an OpenVINO IR")],
        max_lines=1,
    ),
    Case(
        "openvino-bin-missing",
        make_ir_bin_missing,
        EXIT_INPUT,
        ["model.bin: the weights of model.xml are missing", expecting("the IR's .bin")],
        nothing_at(EMBED_OUT),
        max_lines=1,
    ),
    Case(
        "openvino-bin-truncated",
        make_ir_bin_truncated,
        EXIT_INPUT,
        ["model.xml: truncated weights: model.bin has 64 bytes", expecting("an OpenVINO IR")],
        nothing_at(EMBED_OUT),
        max_lines=1,
    ),
    Case(
        "teacher-checkpoint-corrupt",
        make_teacher_checkpoint_corrupt,
        EXIT_INPUT,
        ["teacher.onnx: corrupt or not an ONNX model", expecting("an ONNX model")],
        no_teacher,
        max_lines=1,
    ),
    # Calibration faces that are benchmark faces
    Case(
        "calibration-files-are-benchmark-images",
        make_calibration_of_benchmark_images,
        EXIT_INPUT,
        ["data.calibration: 4 of the 4 calibration images are benchmark images", "faces"],
        no_data_stage,
        max_lines=1,
    ),
    Case(
        "calibration-folder-holds-the-benchmark",
        make_calibration_folder_holds_benchmark,
        EXIT_INPUT,
        ["data.calibration.source: ", "/data overlaps the benchmark ", "/data/bench.bin"],
        no_data_stage,
        max_lines=1,
    ),
    # Weights files
    Case(
        "pth-truncated",
        make_pth_truncated,
        EXIT_INPUT,
        ["backbone.pth is not a loadable checkpoint: truncated", expecting("a torch checkpoint")],
        nothing_at(EMBED_OUT),
        max_lines=1,
    ),
    Case(
        "pth-legacy-truncated",
        make_pth_legacy_truncated,
        EXIT_INPUT,
        ["old.pth is not a loadable checkpoint: truncated", expecting("a torch checkpoint")],
        max_lines=1,
    ),
    Case(
        "pth-empty",
        make_pth_empty,
        EXIT_INPUT,
        ["empty.pth is not a loadable checkpoint: empty file", expecting("a torch checkpoint")],
        max_lines=1,
    ),
    Case(
        "pth-needs-code",
        make_pth_needs_code,
        EXIT_INPUT,
        [
            "evil.pth is not a loadable checkpoint: refused, since loading it would run code",
            "system",
            expecting("a torch checkpoint"),
        ],
        nothing_at("pwned", EMBED_OUT),
        max_lines=1,
    ),
    Case(
        "pth-wrong-architecture",
        make_pth_wrong_architecture,
        EXIT_INPUT,
        ["tiny.pth does not fit model 'mobilefacenet'", "missing keys", "unexpected keys: fc.weight, fc.bias"],
        nothing_at(EMBED_OUT),
    ),
    Case(
        "safetensors-truncated",
        make_safetensors_truncated,
        EXIT_INPUT,
        ["model.safetensors: truncated", expecting("a safetensors file")],
        max_lines=1,
    ),
    Case(
        "safetensors-empty",
        make_safetensors_empty,
        EXIT_INPUT,
        ["model.safetensors: empty file", expecting("a safetensors file")],
        max_lines=1,
    ),
    # RecordIO packs
    Case(
        "rec-header-names-missing-records",
        make_rec_missing_records,
        EXIT_INPUT,
        ["train.idx: the header record of train.rec names records 1..6", "3", expecting("a .idx line")],
        max_lines=1,
    ),
    Case(
        "rec-flipped-continuation-flag",
        make_rec_flipped_flag,
        EXIT_INPUT,
        ["train.rec: record 2 (at byte", "continuation flag 0", expecting("a continuation")],
        nothing_at("folder"),
        max_lines=1,
    ),
    Case(
        "rec-truncated",
        make_rec_truncated,
        EXIT_INPUT,
        ["train.idx:6: offset", "is past the end of train.rec", "the .rec is truncated", expecting("offsets inside")],
        nothing_at("folder"),
        max_lines=1,
    ),
    Case(
        "rec-truncated-in-last-record",
        make_rec_truncated_in_last_record,
        EXIT_INPUT,
        ["train.rec: record 6 at byte", "the .rec is truncated", expecting("the whole chunk")],
        max_lines=1,
    ),
    Case(
        "idx-not-ascii",
        make_idx_not_ascii,
        EXIT_INPUT,
        ["train.idx:2: not ASCII text (byte 0xb9", expecting("'key<TAB>offset' lines")],
        max_lines=1,
    ),
    # Verification .bin
    Case("bin-empty", make_bin_empty, EXIT_INPUT, ["lfw.bin: empty file", expecting("a pickled (bins")], max_lines=1),
    Case(
        "bin-truncated",
        make_bin_truncated,
        EXIT_INPUT,
        ["lfw.bin: truncated", expecting("a pickled (bins, issame_list) pair")],
        max_lines=1,
    ),
    Case(
        "bin-malicious-pickle",
        make_bin_malicious,
        EXIT_INPUT,
        ["lfw.bin: refused to load global", "system", expecting("only numpy arrays and plain data")],
        nothing_at("pwned", "rfw"),
        max_lines=1,
    ),
    # Embeddings for eval --embeddings
    Case(
        "npy-for-npz",
        make_npy_for_npz,
        EXIT_INPUT,
        ["emb.npy: a .npy file holds one bare array", expecting("an .npz archive")],
        max_lines=1,
    ),
    Case(
        "npz-strings",
        make_npz_strings,
        EXIT_INPUT,
        ["e.npz: embeddings have dtype <U3", expecting("real numbers")],
        max_lines=1,
    ),
    Case(
        "npz-complex",
        make_npz_complex,
        EXIT_INPUT,
        ["e.npz: embeddings have dtype complex64", expecting("real numbers")],
        max_lines=1,
    ),
    Case(
        "npz-zero-length",
        make_npz_zero_length,
        EXIT_INPUT,
        ["e.npz: empty benchmark, no pairs", "N >= 1"],
        max_lines=1,
    ),
    Case(
        "npz-all-zero-row",
        make_npz_zero_row,
        EXIT_INPUT,
        ["e.npz: embedding row 7 is all zeros", "cannot be L2-normalised", expecting("non-zero embeddings")],
        max_lines=1,
    ),
    Case(
        "npz-shapes-vs-issame",
        make_npz_wrong_shapes,
        EXIT_INPUT,
        ["e.npz: 40 embedding rows, 14 issame", expecting("2N, N, N, 2N")],
        max_lines=1,
    ),
    Case(
        "npz-object-array",
        make_npz_objects,
        EXIT_INPUT,
        ["e.npz: array 'issame' holds Python objects", "refused", expecting("numeric or string arrays")],
        max_lines=1,
    ),
    Case(
        "npz-truncated",
        make_npz_truncated,
        EXIT_INPUT,
        ["e.npz: truncated", expecting("an .npz archive")],
        max_lines=1,
    ),
    # Images
    Case(
        "image-decompression-bomb",
        make_image_bomb,
        EXIT_INPUT,
        ["bomb.png: refused as a decompression bomb (10000×10000", expecting("a JPEG, PNG, BMP or WebP face image")],
        nothing_at(EMBED_OUT),
        max_lines=1,
    ),
    Case(
        "image-absurd-dimensions",
        make_image_absurd,
        EXIT_INPUT,
        ["huge.png: refused as a decompression bomb", expecting("a JPEG, PNG, BMP or WebP face image")],
        nothing_at("grid.png"),
        max_lines=1,
    ),
    Case(
        "image-undecodable",
        make_image_undecodable,
        EXIT_INPUT,
        ["f1.png: cannot decode image", expecting("a JPEG, PNG, BMP or WebP face image")],
        nothing_at(EMBED_OUT),
        max_lines=1,
    ),
    # Lists and their encodings
    Case(
        "pairs-list-dotdot",
        make_pairs_dotdot,
        EXIT_INPUT,
        ["lists/pairs.csv:1: ../faces/f0.png leaves the list's folder", expecting("a path relative to it")],
        max_lines=1,
    ),
    Case(
        "pairs-list-absolute",
        make_pairs_absolute,
        EXIT_INPUT,
        ["pairs.csv:2:", "f1.png leaves the list's folder", expecting("a path relative to it")],
        max_lines=1,
    ),
    Case(
        "rfw-pairs-identity-is-a-path",
        make_rfw_identity_path,
        EXIT_INPUT,
        ["Asian_pairs.txt:3: identity '../../../../faces' is a path", expecting("a folder name")],
        max_lines=1,
    ),
    Case(
        "pairs-list-not-utf8",
        make_pairs_not_utf8,
        EXIT_INPUT,
        ["pairs.csv:2: not UTF-8 text (byte 0xe9 at offset 35)", expecting("image1,image2,issame")],
        max_lines=1,
    ),
    Case(
        "image-list-not-utf8",
        make_list_not_utf8,
        EXIT_INPUT,
        ["train.csv:3: not UTF-8 text (byte 0xe9", expecting("path,identity[,group] lines")],
        max_lines=1,
    ),
    Case(
        "group-mapping-not-utf8",
        make_groups_not_utf8,
        EXIT_INPUT,
        ["groups.csv:2: not UTF-8 text (byte 0xfc", expecting("identity,group lines")],
        nothing_at("mix.csv"),
        max_lines=1,
    ),
    Case(
        "embed-list-not-utf8",
        make_embed_list_not_utf8,
        EXIT_INPUT,
        ["images.txt:2: not UTF-8 text (byte 0xff at offset 13)", expecting("one image path a line")],
        nothing_at(EMBED_OUT),
        max_lines=1,
    ),
    # Conversion targets that hold data already
    Case(
        "convert-into-nonempty-folder",
        make_convert_into_nonempty,
        EXIT_INPUT,
        ["folder: folder is not empty", expecting("an empty or new folder")],
        folder_unchanged,
        max_lines=1,
    ),
    Case(
        "convert-over-existing-pack",
        make_convert_over_existing_pack,
        EXIT_INPUT,
        ["other.rec, other.idx: already exist", expecting("a new recordio target")],
        pack_unchanged,
        max_lines=1,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_file_is_one_clear_line(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_case(case, tmp_path)


def test_table_is_large_and_ids_are_unique() -> None:
    assert len(CASES) >= 28 and len({case.id for case in CASES}) == len(CASES)


def test_truncated_pickle_is_called_truncated_and_code_is_called_code(tmp_path: Path) -> None:
    # The distinction the messages rest on, without the CLI: the same bytes cut inside the GLOBAL instruction (torch
    # alone would then report a refused global "posix.sys") are truncated, not "code".
    from factory.models.checkpoint import read_checkpoint

    buffer = io.BytesIO()
    torch.save({"hook": Exploit(str(tmp_path / "pwned"))}, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    (tmp_path / "evil.pth").write_bytes(data)
    (tmp_path / "cut.pth").write_bytes(data[: data.index(b"system\n") + 3])
    refused = (
        r"evil\.pth is not a loadable checkpoint: refused, since loading it would run code \((posix|os|nt)\.system"
    )
    with pytest.raises(ValueError, match=refused):
        read_checkpoint(tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"cut\.pth is not a loadable checkpoint: truncated") as err:
        read_checkpoint(tmp_path / "cut.pth")
    assert "run code" not in str(err.value)
    assert not (tmp_path / "pwned").exists()
