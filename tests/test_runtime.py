"""The torch-free runtime layer: verification without torch, numpy preprocessing, artifact and manifest records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from factory.files import sha256_file
from factory.runtime.artifacts import Artifact
from factory.runtime.contract import CONTRACT_KEY, ModelContract
from factory.runtime.manifest import MANIFEST_FILE, MANIFEST_FORMAT, ManifestError, read_manifest
from factory.runtime.preprocess import to_model_input_numpy
from factory.runtime.signing import SIGNATURE_FILE, sign
from factory.runtime.verify import main

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ModelContract(mean=(120.0, 110.0, 100.0), std=(60.0, 62.0, 64.0), embedding_dim=8)
# cryptography too: an unsigned check must not need it (a target may not have it)
BLOCKED = ("torch", "torchvision", "timm", "nncf", "openvino", "cryptography")

# Runs in a fresh interpreter whose first import finder refuses the build-side packages, so any import of them by
# the runtime layer (direct or through a dependency) fails loudly instead of passing because torch is installed.
NO_TORCH_SCRIPT = """
import importlib.abc, json, sys

BLOCKED = set(sys.argv[2].split(","))


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the runtime layer must not import it")
        return None


sys.meta_path.insert(0, Blocker())
import factory.runtime.artifacts
import factory.runtime.benchmark_app
import factory.runtime.contract
import factory.runtime.embedding
import factory.runtime.latency
import factory.runtime.manifest
import factory.runtime.preprocess
import factory.runtime.runners
import factory.runtime.target_runner
import factory.runtime.tensorrt
import factory.runtime.verify

checks = factory.runtime.verify.verify_release(sys.argv[1], threads=1)
runner = factory.runtime.runners.onnx_runner(sys.argv[1] + "/model.onnx")
timed = factory.runtime.latency.time_runner(runner, (1, 4), warmup=1, repeats=3)
print(json.dumps({
    "timed": {b: [r.batch, r.repeats] for b, r in timed.items()},
    "checks": [[c.passed, c.message] for c in checks],
    "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED),
    "runtimes": factory.runtime.runners.RUNTIMES.names(),
}))
"""


WEIGHT = np.random.default_rng(0).normal(size=(3, CONTRACT.embedding_dim)).astype(np.float32)


def write_tiny_onnx(path: Path, contract: ModelContract) -> None:
    """input N×3×112×112 → mean over H, W → MatMul to 8-d, with the contract in the metadata."""
    weight = WEIGHT
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input", "axes"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "weight"], ["embedding"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, *contract.input_size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", contract.embedding_dim])],
        initializer=[
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
            numpy_helper.from_array(weight, "weight"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # what every ONNX Runtime of the last years reads
    model.metadata_props.append(onnx.StringStringEntryProto(key=CONTRACT_KEY, value=contract.to_json()))
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString())


def make_release(root: Path, gates: list | None = None, signing_key: Path | None = None) -> Path:
    """A one-artifact (ONNX) release laid out as the manifest schema says, golden embedding from ONNX Runtime.

    ``signing_key``: an ed25519 private key (PEM) to sign the manifest with, as the release stage does.
    """
    root.mkdir(parents=True, exist_ok=True)
    write_tiny_onnx(root / "model.onnx", CONTRACT)
    face = np.random.default_rng(1).integers(0, 256, size=(1, 3, *CONTRACT.input_size), dtype=np.uint8)
    Image.fromarray(face[0].transpose(1, 2, 0)).save(root / "golden_input.png")
    x = to_model_input_numpy(face, CONTRACT)
    np.save(root / "golden_input.npy", x)
    # The golden embedding the graph must give, computed here without a runtime (the verifier runs ONNX Runtime).
    embedding = (x.astype(np.float64).mean(axis=(2, 3)) @ WEIGHT.astype(np.float64))[0]
    artifact = Artifact("onnx_fp32", ("model.onnx",), "onnxruntime", golden_min_cosine=0.9999)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": "tiny",
        "version": "0.0.1",
        "description": "a test release",
        "files": {name: sha256_file(root / name) for name in ("model.onnx", "golden_input.npy", "golden_input.png")},
        "contract": CONTRACT.to_dict(),
        "artifacts": {artifact.name: {**artifact.to_dict(), "metrics": {}}},
        "reference": {},
        "benchmark": {"sha256": "0" * 64, "pairs": 0, "groups": [], "distances": "pair_distances.npz"},
        "thresholds": {"score": "cosine", "artifacts": {}},
        "gates": gates if gates is not None else [{"artifact": "onnx_fp32", "gate": "mean accuracy", "passed": True}],
        "targets": {},
        "fairness_ledger": [],
        "golden": {
            "input": "golden_input.npy",
            "image": "golden_input.png",
            "embeddings": {artifact.name: embedding.tolist()},
        },
        "licences": {"commercial_use": False, "model_licence": "other", "inputs": {}},
        "signature": None,
        "lineage": {},
    }
    if signing_key is not None:
        manifest["signature"] = {"algorithm": "ed25519", "file": SIGNATURE_FILE, "key_sha256": "test"}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    if signing_key is not None:
        (root / SIGNATURE_FILE).write_text(sign((root / MANIFEST_FILE).read_bytes(), signing_key))
    return root


def test_verify_release_runs_without_torch(tmp_path: Path) -> None:
    release = make_release(tmp_path / "release")
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, str(release), ",".join(BLOCKED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,  # its own process group: whatever happens to it is reported here, not shared
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["checks"] and all(passed for passed, _ in result["checks"]), result["checks"]
    assert [m for _, m in result["checks"]][-1].startswith("golden onnx_fp32: cosine 1.000000 (limit 0.9999)")
    assert result["loaded"] == [], "the runtime layer imported a build-side package"
    assert result["timed"] == {"1": [1, 3], "4": [4, 3]}  # the latency harness runs on a target too
    # "torch" is registered by the build side (factory.models), never by the runtime layer itself.
    assert result["runtimes"] == ["onnxruntime", "openvino", "tensorrt"]


def test_a_flipped_byte_fails_the_checksum_and_is_never_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    release = make_release(tmp_path / "release")
    data = bytearray((release / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (release / "model.onnx").write_bytes(bytes(data))
    assert main([str(release)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "FAIL sha256 model.onnx: MISMATCH: its content differs from the manifest's hash" in lines
    assert "ok   sha256 golden_input.npy: ok" in lines
    assert "FAIL golden onnx_fp32: not run, model.onnx failed its checksum" in lines


def test_verify_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    release = make_release(tmp_path / "release")
    assert main([str(release), "--threads", "2"]) == 0
    assert all(line.startswith("ok   ") for line in capsys.readouterr().out.splitlines())
    assert main([str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere" / MANIFEST_FILE) in capsys.readouterr().err


def ed25519_keys(folder: Path, name: str = "key") -> tuple[Path, Path]:
    """A fresh key pair as PEM files (private PKCS#8, public SubjectPublicKeyInfo), as openssl writes them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def verify_lines(release: Path, *args: str, capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    code = main([str(release), *args])
    return code, capsys.readouterr().out.splitlines()


def test_files_present_but_not_listed_fail_by_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    release = make_release(tmp_path / "release")
    (release / "extra").mkdir()
    (release / "extra" / "notes.txt").write_text("added after the release")
    (release / "model_copy.onnx").symlink_to(release / "model.onnx")
    code, lines = verify_lines(release, capsys=capsys)
    assert code == 1
    assert "FAIL unlisted extra/notes.txt: in the bundle but not in manifest.json" in lines
    assert "FAIL unlisted model_copy.onnx: in the bundle but not in manifest.json" in lines
    # A listed file replaced by a link to an identical copy is not the listed file.
    (release / "extra" / "notes.txt").unlink()
    (release / "model_copy.onnx").unlink()
    (release / "model.onnx").rename(release / "elsewhere.onnx")
    (release / "model.onnx").symlink_to(release / "elsewhere.onnx")
    code, lines = verify_lines(release, capsys=capsys)
    assert "FAIL sha256 model.onnx: a link, not the listed file" in lines
    assert "FAIL unlisted elsewhere.onnx: in the bundle but not in manifest.json" in lines


def test_the_signature_covers_the_manifest_and_the_manifest_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    private, public = ed25519_keys(tmp_path)
    _, other_public = ed25519_keys(tmp_path, "other")
    release = make_release(tmp_path / "release", signing_key=private)
    code, lines = verify_lines(release, "--public-key", str(public), capsys=capsys)
    assert code == 0, lines
    assert any(line.startswith("ok   signature manifest.sig: valid, ed25519 key sha256 ") for line in lines)
    # Without a key the signature is reported, not silently taken as checked.
    code, lines = verify_lines(release, capsys=capsys)
    assert code == 0 and "ok   signature manifest.sig: present, not checked (pass --public-key)" in lines
    code, lines = verify_lines(release, "--public-key", str(other_public), capsys=capsys)
    assert code == 1 and any("FAIL signature manifest.sig: the signature does not match" in x for x in lines)
    # An edited manifest whose hashes and golden vectors still agree with the files: only the signature and the
    # manifest's own hash can tell.
    manifest = json.loads((release / MANIFEST_FILE).read_text())
    digest = sha256_file(release / MANIFEST_FILE)
    manifest["golden"]["embeddings"]["onnx_fp32"] = [2 * v for v in manifest["golden"]["embeddings"]["onnx_fp32"]]
    (release / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    code, lines = verify_lines(release, "--public-key", str(public), "--manifest-sha256", digest, capsys=capsys)
    assert code == 1
    assert any(x.startswith("FAIL signature manifest.sig: the signature does not match") for x in lines)
    assert any(x.startswith("FAIL manifest sha256 ") and x.endswith(f"expected {digest} (edited)") for x in lines)
    assert "ok   golden onnx_fp32: cosine 1.000000 (limit 0.9999)" in lines  # scaling kept the direction: only
    # the signature and the hash caught it
    (release / SIGNATURE_FILE).unlink()
    code, lines = verify_lines(release, capsys=capsys)
    assert code == 1 and "FAIL signature: the manifest says it is signed, but manifest.sig is missing" in lines
    (release / SIGNATURE_FILE).write_text("not base64 !")
    code, lines = verify_lines(release, "--public-key", str(public), capsys=capsys)
    assert "FAIL signature manifest.sig: manifest.sig is not base64 text" in lines


def test_an_unsigned_release_fails_when_a_signature_is_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, public = ed25519_keys(tmp_path)
    release = make_release(tmp_path / "release")
    code, lines = verify_lines(release, "--public-key", str(public), capsys=capsys)
    assert code == 1 and "FAIL signature: the manifest is not signed, and --public-key asks for one" in lines
    # A signature file the manifest does not declare is one more unlisted file.
    (release / SIGNATURE_FILE).write_text("AAAA")
    code, lines = verify_lines(release, capsys=capsys)
    assert "FAIL unlisted manifest.sig: in the bundle but not in manifest.json" in lines
    # A key that is not an ed25519 public key is named.
    code, lines = verify_lines(
        make_release(tmp_path / "signed", signing_key=ed25519_keys(tmp_path, "k")[0]),
        "--public-key",
        str(release / "model.onnx"),
        capsys=capsys,
    )
    assert code == 1 and any("not an unencrypted PEM public key" in x for x in lines)


def test_a_release_of_a_refused_build_is_not_a_release(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    failed = {"artifact": "onnx_fp32", "gate": "accuracy STD", "passed": False}
    release = make_release(tmp_path / "release", gates=[failed])
    code, lines = verify_lines(release, capsys=capsys)
    assert code == 1
    assert "FAIL gates: 1 recorded as failed (onnx_fp32 accuracy STD): a refused build is no release" in lines


@pytest.mark.parametrize("colour_order", ["RGB", "BGR"])
def test_numpy_preprocessing_is_bit_identical_to_torch(colour_order: str) -> None:
    torch = pytest.importorskip("torch")
    from factory.data.preprocess import to_model_input

    contract = ModelContract(
        input_size=(112, 96), colour_order=colour_order, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)
    )
    images = np.random.default_rng(2).integers(0, 256, size=(4, 3, 112, 96), dtype=np.uint8)
    got = to_model_input_numpy(images, contract)
    want = to_model_input(torch.from_numpy(images), contract).numpy()
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert np.array_equal(got, want)
    for bad in (images[:, :2], images[:, :, :100]):
        with pytest.raises(ValueError) as numpy_err:
            to_model_input_numpy(bad, contract)
        with pytest.raises(ValueError) as torch_err:
            to_model_input(torch.from_numpy(np.ascontiguousarray(bad)), contract)
        assert str(numpy_err.value) == str(torch_err.value)


def test_artifact_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    artifact = Artifact(
        "openvino_int8",
        ("student_int8.xml", "student_int8.bin"),
        "openvino",
        precision="int8",
        derived_from="openvino_fp32",
        golden_min_cosine=0.99,
        options={"precision": "f32"},
        parity={"min_cosine": 0.995, "mean_cosine": 0.998, "max_abs_diff": 0.1, "n": 8},
    )
    data = artifact.to_dict()
    assert data["files"] == ["student_int8.xml", "student_int8.bin"]
    assert Artifact.from_dict(json.loads(json.dumps(data))) == artifact
    assert artifact.shipped and not Artifact("teacher", ("teacher.pt",), "torch", reference=True).shipped
    assert artifact.paths(tmp_path) == [tmp_path / "student_int8.xml", tmp_path / "student_int8.bin"]
    with pytest.raises(ValueError, match=r"unknown keys \['bogus'\]"):
        Artifact.from_dict({**data, "bogus": 1})


def test_read_manifest_rejects_another_format(tmp_path: Path) -> None:
    release = make_release(tmp_path / "release")
    assert read_manifest(release)["name"] == "tiny"
    manifest = json.loads((release / MANIFEST_FILE).read_text())
    (release / MANIFEST_FILE).write_text(json.dumps({**manifest, "format": "factory.release/1"}))
    with pytest.raises(
        ManifestError, match="format is 'factory.release/1', a schema this verifier does not know"
    ) as err:
        read_manifest(release)
    assert str(release / MANIFEST_FILE) in str(err.value)
    del manifest["lineage"]
    (release / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="missing lineage"):
        read_manifest(release)
