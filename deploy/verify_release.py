#!/usr/bin/env python3
"""Verify a factory release bundle on the target, with nothing but NumPy and the runtimes installed.

Checks that every file listed in ``manifest.json`` has its recorded sha256, then runs ``golden_input.npy`` through
each artifact (ONNX Runtime for ``.onnx``, OpenVINO for ``.xml``) and compares the embedding with the manifest's
golden embedding (cosine similarity at least the manifest's ``golden.min_cosine``). Exits 0 when everything matches,
1 otherwise, printing one line per check. Self-contained on purpose: it does not import ``factory``.

Usage: python verify_release.py RELEASE_DIR [--threads N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def run_artifact(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    """Embeddings of the preprocessed batch ``x`` from an ``.onnx`` (ONNX Runtime) or ``.xml`` (OpenVINO) file."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    import openvino as ov

    # The golden embeddings were recorded with the f32 hint (on AMX CPUs the default would be bf16).
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    return compiled(x)[compiled.output(0)]


def verify(release: Path, threads: int = 1) -> list[tuple[bool, str]]:
    """Every check as (passed, message)."""
    manifest = json.loads((release / "manifest.json").read_text())
    checks, intact = [], set()
    for name, digest in sorted(manifest["files"].items()):
        path = release / name
        ok = path.is_file() and sha256(path) == digest
        checks.append((ok, f"sha256 {name}: {'ok' if ok else 'MISMATCH or missing'}"))
        if ok:
            intact.add(name)
    golden = manifest["golden"]
    if golden["input"] not in intact:
        return checks + [(False, f"golden: not run, {golden['input']} failed its checksum")]
    x = np.load(release / golden["input"], allow_pickle=False)
    for artifact, expected in golden["embeddings"].items():
        files = manifest["artifacts"][artifact]["files"]
        broken = [f for f in files if f not in intact]
        if broken:  # a tampered file is never handed to a runtime
            checks.append((False, f"golden {artifact}: not run, {', '.join(broken)} failed its checksum"))
            continue
        got = run_artifact(release / files[0], x, threads)[0].astype(np.float64)
        want = np.asarray(expected, dtype=np.float64)
        cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
        limit = golden["min_cosine"][artifact]
        checks.append((cosine >= limit, f"golden {artifact}: cosine {cosine:.6f} (limit {limit})"))
    return checks


def main() -> int:
    """Command line entry: prints one line per check, returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", type=Path, help="release directory holding manifest.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not (args.release / "manifest.json").is_file():
        print(f"{args.release / 'manifest.json'} not found (expected a factory release directory)", file=sys.stderr)
        return 2
    checks = verify(args.release, args.threads)
    for ok, message in checks:
        print(("ok   " if ok else "FAIL ") + message)
    return 0 if all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
