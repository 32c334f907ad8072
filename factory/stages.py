"""The pipeline's stages, in the order data flows: what each depends on and how it reports itself.

The work of each stage is a library function in its own sub-package; this module only wires them together.
``settings`` selects exactly the recipe fields that can change a stage's output: those, plus its inputs' file
hashes, make up its cache key (see :mod:`factory.pipeline`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from factory.files import sha256_file
from factory.pipeline import Stage, register_stage
from factory.recipe import Recipe


def _lazy(module: str, function: str) -> Any:
    # Stage functions import torch, NNCF and OpenVINO; resolve them only when the stage actually runs.
    def run(ctx: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), function)(ctx)

    return run


def fingerprint(path: str) -> str:
    """What identifies an input from outside the run.

    A file's sha256 (an OpenVINO ``.bin`` beside its ``.xml`` included), or for a folder (an RFW tree) the names,
    sizes and modification times of its files: hashing every image of a large benchmark at each build is too slow.
    """
    p = Path(path)
    if p.is_file():
        digest = sha256_file(p)
        return digest + (sha256_file(p.with_suffix(".bin")) if p.suffix == ".xml" else "")
    listing = sorted(
        (str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns) for f in p.rglob("*") if f.is_file()
    )
    return hashlib.sha256(repr(listing).encode()).hexdigest()


def _with_inputs(settings: dict[str, Any], **paths: str | None) -> dict[str, Any]:
    """``settings`` plus the fingerprint of every outside file the recipe names, so editing one re-runs the stage."""
    return {**settings, **{f"{name}_fingerprint": fingerprint(p) for name, p in paths.items() if p}}


def _data_settings(r: Recipe) -> dict[str, Any]:
    return _with_inputs({"data": r.data, "seed": r.seed}, benchmark=r.data.benchmark)


def _teacher_settings(r: Recipe) -> dict[str, Any]:
    settings = {"teacher": r.teacher, "world": r.data.world, "seed": r.seed}
    return _with_inputs(settings, checkpoint=r.teacher.checkpoint, train_data=r.teacher.train_data)


def _distill_settings(r: Recipe) -> dict[str, Any]:
    return _with_inputs({"distill": r.distill, "world": r.data.world, "seed": r.seed}, data=r.distill.data)


def _validate_summary(m: dict[str, Any]) -> str:
    parts = []
    for name in ("teacher", "torch_fp32", "openvino_int8"):
        fairness = m["artifacts"][name]["evaluation"]["fairness"]
        std = "-" if fairness["std"] is None else f"{100 * fairness['std']:.2f}"
        parts.append(f"{name} {100 * fairness['mean']:.2f}% (STD {std})")
    return ", ".join(parts)


register_stage(
    Stage(
        name="data",
        needs=(),
        settings=_data_settings,
        run=_lazy("factory.data.build", "build_data"),
        summary=lambda m: (
            f"{len(m['groups'])} groups, {m['benchmark_pairs']} benchmark pairs, "
            f"{m['calibration_images']} calibration faces, previews of {', '.join(m['groups'])}"
        ),
    )
)
register_stage(
    Stage(
        name="teacher",
        needs=(),
        settings=_teacher_settings,
        run=_lazy("factory.train.teacher", "train_teacher"),
        summary=lambda m: (
            f"{m['model']}: checkpoint {m['source']}"
            if "source" in m
            else f"{m['model']} ({m['params'] / 1e6:.2f} M params), {m['steps']} steps on "
            f"{m['identities']} identities, train acc {m['final'].get('acc', float('nan')):.3f}, "
            f"{m['images_per_second']:.0f} img/s"
        ),
    )
)
register_stage(
    Stage(
        name="distill",
        needs=("teacher",),
        settings=_distill_settings,
        run=_lazy("factory.distill.feature_kd", "distill_student"),
        summary=lambda m: (
            f"{m['student']} ({m['params'] / 1e6:.2f} M params) from {m['teacher']}, {m['steps']} steps, "
            f"teacher cosine {m['final'].get('cos', float('nan')):.3f}, {m['images_per_second']:.0f} img/s"
        ),
    )
)
register_stage(
    Stage(
        name="export",
        needs=("distill",),
        settings=lambda r: {"export": r.export},
        run=_lazy("factory.export.build", "export_student"),
        summary=lambda m: ", ".join(f"{k} cosine {v['min_cosine']:.6f}" for k, v in m["parity"].items()),
    )
)
register_stage(
    Stage(
        name="compress",
        needs=("data", "distill", "export"),
        settings=lambda r: {"compress": r.compress},
        run=_lazy("factory.compress.build", "compress_student"),
        summary=lambda m: (
            f"INT8 ({m['preset']}) on {m['calibration_images']} synthetic faces in "
            f"{m['quantize_seconds']:.1f}s, cosine vs FP32 {m['drift_vs_fp32']['mean_cosine']:.4f}"
        ),
    )
)
register_stage(
    Stage(
        name="validate",
        needs=("data", "teacher", "distill", "export", "compress"),
        settings=lambda r: {"validate": r.validate, "threads": r.threads},
        run=_lazy("factory.evaluate.validate", "validate_artifacts"),
        summary=_validate_summary,
    )
)
register_stage(
    Stage(
        name="release",
        needs=("data", "teacher", "distill", "export", "compress", "validate"),
        settings=lambda r: {"gates": r.gates, "release": r.release, "name": r.name},
        run=_lazy("factory.release.bundle", "make_release"),
        summary=lambda m: (
            f"{sum(g['passed'] for g in m['gates'])}/{len(m['gates'])} gates passed, version {m['version']}"
        ),
    )
)
