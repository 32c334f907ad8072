"""Deployment bundles: everything one target needs to measure the release on itself, in one folder.

::

    bundle.json                 format factory.target-bundle/1: the target's settings, each artifact's record with
                                the build machine's golden embedding, threshold and pair similarities, the TensorRT
                                engines to build, and the sha256 of every other file
    <model files>               the shipped files this target runs (for TensorRT: the ONNX its engines are built from)
    benchmark_subset.npz        aligned uint8 faces of N pairs per group, labels and groups (no pickles)
    golden_input.npy            the golden face, preprocessed
    factory/                    the torch-free runtime layer, vendored (factory/runtime and the two modules it uses)
    run_target.py               python run_target.py  ->  report.json
    build_engine.sh             TensorRT targets: the same engine builds as trtexec commands

``bundle.json`` holds no time or host, so the same release and target always give the same bytes: its sha256, which
every report carries, names the bundle.
"""

from __future__ import annotations

import io
import shlex
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import factory
from factory.data.benchmark import PairBenchmark
from factory.files import atomic_path, sha256_tree, write_json, write_text
from factory.recipe.targets import TargetConfig, target_dict
from factory.runtime.artifacts import Artifact, open_runner
from factory.runtime.embedding import embed_images, pair_similarities
from factory.runtime.preprocess import to_model_input_numpy
from factory.runtime.runners import embed_uint8
from factory.runtime.target_runner import BUNDLE_FILE, BUNDLE_FORMAT
from factory.runtime.tensorrt import trtexec_command

BENCHMARK_FILE = "benchmark_subset.npz"
GOLDEN_FILE = "golden_input.npy"
RUNNER_SCRIPT = "run_target.py"
ENGINE_SCRIPT = "build_engine.sh"
# What the runner imports: the runtime layer and the two stdlib-only modules it uses. Nothing else of the factory.
VENDORED = ("__init__.py", "files.py", "registry.py", "runtime")
ONNX_INPUT_NAME = "input"  # factory.export.onnx names the model input so; trtexec's shapes refer to it
# An engine's golden embedding is its ONNX parent's on the build machine; FP16 kernels move it a little.
ENGINE_GOLDEN_MIN_COSINE = {"fp32": 0.999, "fp16": 0.995}

RUNNER = '''#!/usr/bin/env python3
"""Measure this deployment bundle on this device: python run_target.py [--out report.json]

Needs numpy and the target's runtime only; the factory code it runs is the copy in ./factory.
"""
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))  # the bundle's own factory/runtime, before any installed factory

from factory.runtime.target_runner import main  # noqa: E402

sys.exit(main(["--bundle", str(here), *sys.argv[1:]]))
'''


class BundleError(ValueError):
    """A bundle that cannot be made for this target from this build (named artifacts missing, nothing to run)."""


@dataclass(frozen=True)
class Shipped:
    """A shipped artifact and the folder its files are in."""

    artifact: Artifact
    root: Path


def write_bundle(
    out: Path,
    target: TargetConfig,
    shipped: list[Shipped],
    bench: PairBenchmark,
    release: dict[str, str],
    flip: bool = True,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Write the bundle of ``target`` into ``out`` (replaced), from the build's shipped artifacts.

    Args:
        out: the bundle folder.
        target: the target's settings.
        shipped: the build's shipped artifacts, located.
        bench: the build's benchmark; ``target.benchmark_pairs_per_group`` pairs of each group go in.
        release: ``{"name": ..., "version": ...}`` of the build.
        flip: flip fusion, as validation embeds.
        batch_size: faces per runtime call while embedding.

    Returns:
        The ``bundle.json`` content.

    Raises:
        BundleError: the target asks for artifacts this build does not ship, or none of them fits it.

    """
    chosen, engines = _select(target, shipped)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for item in {s.artifact.name: s for s in chosen}.values():
        for name in item.artifact.files:
            with atomic_path(out / name) as tmp:
                shutil.copyfile(item.root / name, tmp)
    subset = _subset(bench, target.benchmark_pairs_per_group)
    _save_npz(out / BENCHMARK_FILE, images=subset.images, issame=subset.issame, groups=subset.groups)
    # The reference embeddings use the target's threads: on the same CPU and runtime the target then reproduces them
    # exactly (another thread count sums in another order, enough to flip a pair at the threshold).
    runners = {s.artifact.name: open_runner(s.artifact, out, threads=target.threads) for s in chosen}
    contracts = {r.contract for r in runners.values()}
    if len(contracts) != 1:
        raise BundleError(f"the artifacts for {target.name} disagree on their input contract: {contracts}")
    (contract,) = contracts
    x = to_model_input_numpy(bench.images[:1], contract).astype(np.float32)
    with atomic_path(out / GOLDEN_FILE) as tmp, open(tmp, "wb") as f:
        np.save(f, x)
    references = {}
    for name, runner in runners.items():
        embeddings = embed_images(embed_uint8(runner), subset.images, batch_size, flip)
        similarities = pair_similarities(embeddings)
        references[name] = {
            "golden_embedding": np.asarray(runner(x), np.float64)[0].tolist(),
            "threshold": best_threshold(similarities, subset.issame),
            "reference_similarities": [float(s) for s in similarities],
        }
    records = []
    if engines:
        for precision, parent in engines:
            engine = Artifact(
                f"tensorrt_{precision}",
                (f"student_{precision}.engine",),
                "tensorrt",
                precision=precision,
                derived_from=parent.artifact.name,
                golden_min_cosine=ENGINE_GOLDEN_MIN_COSINE.get(precision, parent.artifact.golden_min_cosine),
                contract=contract.to_dict(),
            )
            records.append({"artifact": engine.to_dict(), **references[parent.artifact.name]})
    else:
        records = [{"artifact": s.artifact.to_dict(), **references[s.artifact.name]} for s in chosen]
    engine_specs = [_engine_spec(precision, parent, target, contract.input_size) for precision, parent in engines]
    if engine_specs:
        lines = [
            "#!/bin/sh",
            "# The engine builds run_target.py performs, as trtexec commands (run inside the bundle).",
            "set -e",
        ]
        lines += [shlex.join(spec["trtexec"]) for spec in engine_specs]
        write_text(out / ENGINE_SCRIPT, "\n".join(lines) + "\n")
        (out / ENGINE_SCRIPT).chmod(0o755)
    _vendor(out)
    write_text(out / RUNNER_SCRIPT, RUNNER)
    (out / RUNNER_SCRIPT).chmod(0o755)
    bundle = {
        "format": BUNDLE_FORMAT,
        "target": target_dict(target),
        "release": release,
        "contract": contract.to_dict(),
        "artifacts": records,
        "engines": engine_specs,
        "benchmark": {
            "file": BENCHMARK_FILE,
            "pairs": int(len(subset.issame)),
            "groups": list(subset.group_names),
            "flip": flip,
            "batch_size": batch_size,
        },
        "golden": {"input": GOLDEN_FILE},
        "files": sha256_tree(out),
    }
    write_json(out / BUNDLE_FILE, bundle)
    return bundle


def best_threshold(similarities: np.ndarray, issame: np.ndarray) -> float:
    """The similarity threshold (``same`` when at least it) with the highest accuracy; midway between two scores."""
    order = np.sort(np.unique(similarities))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    accuracy = [np.mean((similarities >= t) == issame) for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def _select(target: TargetConfig, shipped: list[Shipped]) -> tuple[list[Shipped], list[tuple[str, Shipped]]]:
    """The artifacts the target runs and, for TensorRT, (precision, ONNX parent) of each engine to build."""
    shipped = [s for s in shipped if s.artifact.shipped]  # references (the teacher) never go to a target
    by_name = {s.artifact.name: s for s in shipped}
    unknown = [n for n in target.artifacts if n not in by_name]
    if unknown:
        raise BundleError(
            f"target {target.name} asks for {', '.join(unknown)}, which this build does not ship "
            f"(shipped: {', '.join(by_name) or 'none'})"
        )
    pool = [by_name[n] for n in target.artifacts] if target.artifacts else list(shipped)
    if target.runtime == "tensorrt":
        onnx = [s for s in pool if s.artifact.files[0].endswith(".onnx")]
        engines = []
        for precision in target.precisions:
            wanted = "int8" if precision == "int8" else "fp32"
            parents = [s for s in onnx if s.artifact.precision == wanted]
            if not parents:
                what = "a Q/DQ INT8 ONNX (compress.methods: {kind: onnx_qdq_ptq})" if wanted == "int8" else "an ONNX"
                raise BundleError(f"target {target.name} builds a {precision} engine from {what}; this build has none")
            engines.append((precision, parents[0]))
        return list({id(p): p for _, p in engines}.values()), engines
    chosen = [s for s in pool if s.artifact.runtime == target.runtime and s.artifact.precision in target.precisions]
    if target.runtime == "onnxruntime" and not target.artifacts:
        chosen = [s for s in chosen if s.artifact.files[0].endswith(".onnx")]  # .ort files go to phones, by name
    if not chosen:
        have = ", ".join(f"{s.artifact.name} ({s.artifact.runtime} {s.artifact.precision})" for s in pool) or "none"
        raise BundleError(
            f"target {target.name} runs {target.runtime} at {', '.join(target.precisions)}; this build ships {have}"
        )
    return chosen, []


def _engine_spec(precision: str, parent: Shipped, target: TargetConfig, input_size: tuple[int, int]) -> dict[str, Any]:
    onnx, engine = parent.artifact.files[0], f"student_{precision}.engine"
    max_batch = max(target.batch_sizes)
    command = trtexec_command(onnx, engine, ONNX_INPUT_NAME, input_size, precision, target.workspace_mb, max_batch)
    return {"engine": engine, "onnx": onnx, "precision": precision, "max_batch": max_batch, "trtexec": command}


def _subset(bench: PairBenchmark, per_group: int) -> PairBenchmark:
    """``per_group`` pairs of every group, evenly spread over the group's pairs (genuine and impostor alike)."""
    keep = []
    for g in range(len(bench.group_names)):
        pairs = np.flatnonzero(bench.groups == g)
        keep.extend(pairs[np.unique(np.linspace(0, len(pairs) - 1, min(per_group, len(pairs))).round().astype(int))])
    pairs = np.asarray(keep, dtype=np.int64)
    images = np.stack([bench.images[0::2][pairs], bench.images[1::2][pairs]], axis=1).reshape(
        -1, *bench.images.shape[1:]
    )
    subjects = np.stack([bench.subjects[0::2][pairs], bench.subjects[1::2][pairs]], axis=1).reshape(-1)
    return PairBenchmark(images, bench.issame[pairs], bench.groups[pairs], subjects, bench.group_names)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` with fixed zip timestamps: the same arrays give the same bytes (the bundle's hash is its name)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def _vendor(out: Path) -> None:
    """Copy the runtime layer (and only it) into ``out/factory``: the runner imports nothing else of the factory."""
    source = Path(factory.__file__).parent
    for name in VENDORED:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, out / "factory" / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (out / "factory").mkdir(exist_ok=True)
            shutil.copyfile(src, out / "factory" / name)
