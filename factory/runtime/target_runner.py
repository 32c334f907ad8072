"""The on-target runner: measures a deployment bundle on the device it was made for, with numpy and one runtime.

A bundle (written by ``factory deploy bundle``; format :data:`BUNDLE_FORMAT`) holds the shipped model files for one
target, this layer of the factory vendored (``factory/runtime`` and the two modules it needs), a benchmark subset of
aligned faces, golden vectors and ``bundle.json``. On the target, :func:`run_bundle`:

1. re-hashes every file listed in ``bundle.json`` (a file that fails is never handed to a runtime);
2. builds the TensorRT engines the bundle asks for from its ONNX files, when they are not there yet;
3. per artifact: the golden input's embedding against the build machine's, the benchmark faces' embeddings (flip
   fusion as in validation), each pair's cosine similarity, per-group accuracy at the bundle's threshold (the one
   the build machine's embeddings separate best), latency at the target's batch sizes with the runtime's own call,
   and OpenVINO's ``benchmark_app`` on the same IR where it is installed;
4. writes a JSON report (:data:`REPORT_FORMAT`) carrying the sha256 of ``bundle.json`` and of every file it ran, so
   the build machine can refuse a report that was not made from the files it released.

Usage on the target: ``python run_target.py [--out report.json]`` inside the bundle folder.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from factory.files import read_json, sha256_file, write_json
from factory.runtime.artifacts import Artifact, open_runner
from factory.runtime.contract import ModelContract
from factory.runtime.embedding import embed_images, pair_similarities
from factory.runtime.latency import time_runner
from factory.runtime.runners import embed_uint8

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "factory.target-bundle/1"
REPORT_FILE = "report.json"
REPORT_FORMAT = "factory.target-report/1"


class BundleError(ValueError):
    """A folder that is not a readable deployment bundle."""


def read_bundle(bundle_dir: str | Path) -> dict[str, Any]:
    """``bundle.json`` of a bundle folder, checked for its format.

    Raises:
        BundleError: no ``bundle.json``, unreadable, or another format.

    """
    path = Path(bundle_dir) / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"{path}: no such file (expected a deployment bundle written by `factory deploy bundle`)")
    try:
        bundle = read_json(path)
    except ValueError as e:
        raise BundleError(str(e)) from None
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        got = bundle.get("format") if isinstance(bundle, dict) else type(bundle).__name__
        raise BundleError(f"{path}: format is {got!r}, expected {BUNDLE_FORMAT!r}")
    return bundle


def run_bundle(bundle_dir: str | Path, echo: Any = print) -> dict[str, Any]:
    """Measure every artifact of a bundle on this machine; the report (see the module docstring)."""
    root = Path(bundle_dir)
    bundle = read_bundle(root)
    target = bundle["target"]
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "target": target["name"],
        "bundle_sha256": sha256_file(root / BUNDLE_FILE),
        "release": bundle["release"],
        "environment": _environment(target["runtime"]),
        "files": {},
        "checks": [],
        "engines": {},
        "artifacts": {},
    }
    intact = set()
    for name, digest in sorted(bundle["files"].items()):
        path = root / name
        found = sha256_file(path) if path.is_file() else None
        report["files"][name] = found
        ok = found == digest
        report["checks"].append(
            {"check": f"sha256 {name}", "passed": ok, "detail": "" if ok else "MISMATCH or missing"}
        )
        if ok:
            intact.add(name)
    echo(f"{target['name']}: {len(intact)}/{len(bundle['files'])} files intact")
    contract = ModelContract.from_dict(bundle["contract"])
    for spec in bundle["engines"]:
        report["engines"][spec["engine"]] = entry = _build_engine(root, spec, contract, target, intact)
        if entry["built"]:
            intact.add(spec["engine"])
        done = f"built in {entry['seconds']:.1f} s" if entry["built"] else entry["error"]
        echo(f"engine {spec['engine']}: {done}")
    golden = bundle["golden"]
    benchmark = bundle["benchmark"]
    inputs_ok = {golden["input"], benchmark["file"]} <= intact
    if inputs_ok:
        x = np.load(root / golden["input"], allow_pickle=False)
        with np.load(root / benchmark["file"], allow_pickle=False) as data:
            images, issame, groups = data["images"], data["issame"].astype(bool), data["groups"]
    for entry in bundle["artifacts"]:
        artifact = Artifact.from_dict(entry["artifact"])
        untrusted = [f for f in artifact.files if f not in intact]
        if not inputs_ok or untrusted:
            missing = untrusted or sorted({golden["input"], benchmark["file"]} - intact)
            report["artifacts"][artifact.name] = {"error": f"not run: {', '.join(missing)} not intact or not built"}
            echo(f"{artifact.name}: {report['artifacts'][artifact.name]['error']}")
            continue
        try:
            measured = _measure(root, artifact, entry, target, x, images, issame, groups, benchmark)
        except Exception as e:  # a report covers every artifact, even when one runtime fails on this device
            measured = {"error": f"{type(e).__name__}: {e}"}
        report["artifacts"][artifact.name] = measured
        echo(f"{artifact.name}: " + (measured.get("error") or _line(measured)))
    return report


def _measure(
    root: Path,
    artifact: Artifact,
    entry: dict[str, Any],
    target: dict[str, Any],
    x: np.ndarray,
    images: np.ndarray,
    issame: np.ndarray,
    groups: np.ndarray,
    benchmark: dict[str, Any],
) -> dict[str, Any]:
    threads = int(target["threads"])
    options = {**artifact.options, **({"device": target["device"]} if artifact.runtime == "openvino" else {})}
    runner = open_runner(Artifact.from_dict({**artifact.to_dict(), "options": options}), root, threads=threads)
    got = np.asarray(runner(x), dtype=np.float64)[0]
    want = np.asarray(entry["golden_embedding"], dtype=np.float64)
    cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
    started = time.perf_counter()
    embeddings = embed_images(embed_uint8(runner), images, int(benchmark["batch_size"]), bool(benchmark["flip"]))
    seconds = time.perf_counter() - started
    similarities = pair_similarities(embeddings)
    same = similarities >= float(entry["threshold"])
    accuracy = {
        group: float(np.mean(same[groups == g] == issame[groups == g])) for g, group in enumerate(benchmark["groups"])
    }
    latency = time_runner(runner, target["batch_sizes"], target["latency_warmup"], target["latency_repeats"])
    measured: dict[str, Any] = {
        "golden_cosine": cosine,
        "similarities": [float(s) for s in similarities],  # full precision: the threshold test is exact
        "threshold": float(entry["threshold"]),
        "accuracy": accuracy,
        "accuracy_mean": float(np.mean(list(accuracy.values()))),
        "embed_seconds": seconds,
        "latency_by_batch": {str(b): r.to_dict() for b, r in latency.items()},
    }
    if artifact.runtime == "openvino" and float(target.get("benchmark_app_seconds", 0)) > 0:
        measured["benchmark_app"] = _benchmark_app(root / artifact.files[0], artifact, target, runner.contract, latency)
    return measured


def _benchmark_app(
    xml: Path, artifact: Artifact, target: dict[str, Any], contract: ModelContract, latency: dict[int, Any]
) -> dict[str, Any]:
    from factory.runtime.benchmark_app import BenchmarkAppUnavailable, difference, run_benchmark_app

    checks: dict[str, Any] = {}
    for batch, ours in latency.items():
        try:
            app = run_benchmark_app(
                xml,
                batch,
                contract.input_size,
                threads=int(target["threads"]),
                precision=str(artifact.options.get("precision", "f32")),
                seconds=float(target["benchmark_app_seconds"]),
                device=str(target["device"]),
            )
        except (BenchmarkAppUnavailable, RuntimeError) as e:  # recorded: the report says why there is no cross-check
            checks[str(batch)] = {"error": str(e)}
            continue
        checks[str(batch)] = app.to_dict() | {"difference": difference(ours.median_ms, app.median_ms)}
    return checks


def _build_engine(
    root: Path, spec: dict[str, Any], contract: ModelContract, target: dict[str, Any], intact: set[str]
) -> dict[str, Any]:
    """Build one TensorRT engine from its shipped ONNX unless a previous run here built it already."""
    engine = root / spec["engine"]
    if spec["onnx"] not in intact:
        return {"built": False, "error": f"{spec['onnx']} not intact: engine not built", "seconds": 0.0}
    if engine.is_file() and (root / spec["engine"]).with_suffix(".json").is_file():
        return {"built": True, "reused": True, "seconds": 0.0, "error": None}
    from factory.runtime.tensorrt import build_engine

    started = time.perf_counter()
    try:
        build_engine(
            root / spec["onnx"],
            engine,
            contract,
            precision=spec["precision"],
            workspace_mb=int(target["workspace_mb"]),
            max_batch=max(target["batch_sizes"]),
        )
    except Exception as e:  # TensorRT absent or failing: recorded, and the engine's artifact is reported not run
        return {"built": False, "error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - started}
    return {"built": True, "reused": False, "seconds": time.perf_counter() - started, "error": None}


def _environment(runtime: str) -> dict[str, Any]:
    """Where the report was made: the interpreter, OS, CPU and the runtime's version."""
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "numpy": np.__version__,
    }
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}.get(runtime)
    try:
        env[runtime] = __import__(module).__version__ if module else None
    except ImportError:
        env[runtime] = None
    env["torch_importable"] = _importable("torch")
    return env


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _line(measured: dict[str, Any]) -> str:
    latency = measured["latency_by_batch"]["1"]["median_ms"]
    return (
        f"golden cosine {measured['golden_cosine']:.6f}, accuracy {100 * measured['accuracy_mean']:.2f}% at the "
        f"bundle's threshold, {latency:.2f} ms at batch 1"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry: run the bundle (``--bundle``, default here) and write its report.

    Returns 0 when every file was intact and every artifact ran, 1 otherwise, 2 when the folder is not a bundle.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path.cwd(), help="the bundle folder (default: here)")
    parser.add_argument("--out", type=Path, default=None, help=f"report file (default: BUNDLE/{REPORT_FILE})")
    args = parser.parse_args(argv)
    try:
        report = run_bundle(args.bundle)
    except BundleError as e:
        print(e, file=sys.stderr)
        return 2
    out = write_json(args.out or args.bundle / REPORT_FILE, report)
    print(f"report: {out}")
    complete = all(c["passed"] for c in report["checks"]) and not any(
        "error" in a for a in report["artifacts"].values()
    )
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
