"""Runs the stages of one recipe in order, with a content-addressed stage cache and resume, and publishes the release.

Each stage's outputs live in ``<run_dir>/stages/<stage>/<key>/`` (the key: :mod:`factory.pipeline.cache`). A stage
is skipped when its directory already holds ``stage.json`` (written last). Work happens in ``<key>.partial/``, which
survives a crash or Ctrl-C so that the next build resumes there (training stages keep resumable checkpoints in it),
and is renamed into place only when the stage finished: the cache never holds half a stage.

The pipeline's rules live here, once: a stage that ``publishes`` becomes ``<run_dir>/release`` (an atomically
replaced symlink) when it finishes, and only then is ``<run_dir>/recipe.resolved.yaml`` rewritten. A failed gate
leaves both alone, so ``release`` keeps naming the last bundle that passed its gates, and records the failure
beside it in ``<run_dir>/release.failed.json`` (gates, values, limits and the recipe that failed). One build runs
per run directory at a time (:mod:`factory.pipeline.lock`). With ``nproc`` above 1 a stage that trains runs as that
many DDP processes under torchrun (:mod:`factory.pipeline.launch`); the build itself stays one process.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from factory.files import sha256_tree, write_json, write_text
from factory.pipeline.cache import stage_key, stage_material
from factory.pipeline.launch import launch_stage
from factory.pipeline.lock import run_dir_lock
from factory.pipeline.stage import (
    STAGE_FILE,
    GateFailure,
    Stage,
    StageContext,
    StageOutput,
    cached_output,
    registry_of,
    run_dir_for,
)
from factory.recipe import Recipe
from factory.registry import Registry
from factory.train.distributed import check_processes

FAILED_FILE = "release.failed.json"


@dataclass
class BuildResult:
    """The outcome of :func:`build`."""

    run_dir: Path
    stages: dict[str, StageOutput] = field(default_factory=dict)
    release_dir: Path | None = None


def build(
    recipe: Recipe,
    force: tuple[str, ...] = (),
    until: str | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    stages: Sequence[Stage] | None = None,
    wait: bool = False,
    nproc: int = 1,
) -> BuildResult:
    """Run every stage of ``recipe`` (or up to ``until``), reusing cached stages.

    Args:
        recipe: a validated recipe.
        force: stage names to re-run even if cached.
        until: stop after this stage.
        echo: where one-line stage summaries go.
        progress: show progress bars.
        stages: the stage list (default: :data:`factory.pipeline.stages.STAGES`).
        wait: if another process is building the same run directory, wait for it instead of raising.
        nproc: processes each training stage runs on (DDP under torchrun when above 1; see
            :mod:`factory.pipeline.launch`). The other stages run in this process either way.

    Returns:
        The stage outputs and, when a publishing stage ran, the published release directory.

    Raises:
        UnknownNameError: a name in ``force``/``until`` is not a stage.
        ValueError: ``nproc`` more than a training stage's device has, or a batch it cannot split (before any
            stage runs).
        RunDirBusy: another process is building this run directory (and ``wait`` is false).
        GateFailure: a release gate failed; ``<run_dir>/release`` still names the last bundle that passed
            (``failure.kept_release``, None if there is none) and ``failure.record`` holds the failure.
    """
    by_name, order = stage_registry(stages)
    for name in (*force, *([until] if until is not None else [])):
        by_name.get(name)
    names = order[: order.index(until) + 1] if until is not None else order
    picked = [by_name.get(name) for name in names]
    trainings = {s.name: cfg for s in picked if (cfg := s.trains(s.config(recipe))) is not None}
    check_processes(nproc, trainings)  # before anything runs: a refused --nproc must not cost a data stage first
    run_dir = run_dir_for(recipe)
    result = BuildResult(run_dir=run_dir)
    with run_dir_lock(run_dir, wait=wait, echo=echo):
        for index, name in enumerate(names, 1):
            stage = by_name.get(name)
            inputs = {need: result.stages[need] for need in stage.needs}
            try:
                out = _run_stage(stage, recipe, run_dir, inputs, name in force, echo, progress, nproc)
            except GateFailure as failure:
                _record_failure(run_dir, recipe, failure)
                raise
            result.stages[name] = out
            state = "cached " if out.cached else f"{out.seconds:6.1f}s"
            line = stage.summary(out.metrics)
            echo(f"[{index}/{len(names)}] {name:<9} {state}  {line}".rstrip())
            if stage.publishes:
                # A stage may publish one folder of its directory (the release: its versioned bundle).
                result.release_dir = _publish(run_dir, out.dir / out.metrics.get("published", ""), recipe)
    return result


def stage_registry(stages: Sequence[Stage] | None) -> tuple[Registry[Stage], list[str]]:
    """:func:`~factory.pipeline.stage.registry_of` the given stages, or of the pipeline's own when None.

    The pipeline's stages are imported only here, when needed: they pull in torch, NNCF and OpenVINO.
    """
    if stages is None:
        from factory.pipeline.stages import STAGES as stages
    return registry_of(stages)


def _run_stage(
    stage: Stage,
    recipe: Recipe,
    run_dir: Path,
    inputs: dict[str, StageOutput],
    force: bool,
    echo: Callable[[str], None],
    progress: bool,
    nproc: int = 1,
) -> StageOutput:
    material = stage_material(stage, recipe, inputs, nproc)
    key = stage_key(material)
    final = run_dir / "stages" / stage.name / key
    partial = final.with_name(key + ".partial")
    if force:
        shutil.rmtree(final, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
    cached = cached_output(stage.name, key, final)
    if cached is not None:
        return cached
    shutil.rmtree(final, ignore_errors=True)  # a directory without its record is not a finished stage
    partial.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ctx = StageContext(
        config=stage.config(recipe), work_dir=partial, inputs=inputs, recipe=recipe, echo=echo, progress=progress
    )
    try:
        if nproc > 1 and stage.trains(ctx.config) is not None:
            made = launch_stage(stage, ctx, nproc, key)
        else:
            made = stage.run(ctx)
    except GateFailure:
        shutil.rmtree(partial, ignore_errors=True)  # nothing of a refused release is kept
        raise
    seconds = time.perf_counter() - start
    write_text(partial / "recipe.resolved.yaml", recipe.to_yaml())
    files = sha256_tree(partial)
    for artifact in made.artifacts:
        missing = [f for f in artifact.files if f not in files]
        if missing:
            raise RuntimeError(f"stage {stage.name} declared artifact {artifact.name} but did not write {missing}")
    write_json(
        partial / STAGE_FILE,
        {
            **material,
            "key": key,
            "upstream_keys": {n: o.key for n, o in inputs.items()},
            "files": files,
            "artifacts": [a.to_dict() for a in made.artifacts],
            "metrics": made.metrics,
            "seconds": seconds,
        },
    )
    os.replace(partial, final)
    return StageOutput(stage.name, key, final, files, made.metrics, list(made.artifacts), False, seconds)


def _publish(run_dir: Path, bundle: Path, recipe: Recipe) -> Path:
    """Point ``<run_dir>/release`` at the finished bundle (atomically replaced symlink), then record its recipe."""
    link = run_dir / "release"
    tmp = run_dir / ".release.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(bundle, run_dir))
    os.replace(tmp, link)
    write_text(run_dir / "recipe.resolved.yaml", recipe.to_yaml())
    (run_dir / FAILED_FILE).unlink(missing_ok=True)  # this release supersedes the failure
    return link


def current_release(run_dir: Path) -> Path | None:
    """The bundle ``<run_dir>/release`` names, or None when no build of this run directory has passed its gates."""
    link = run_dir / "release"
    return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None


def _record_failure(run_dir: Path, recipe: Recipe, failure: GateFailure) -> None:
    """Write ``release.failed.json`` beside the untouched ``release`` pointer and tell ``failure`` about both."""
    kept = current_release(run_dir)
    record = write_json(
        run_dir / FAILED_FILE,
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "failed": [g for g in failure.gates if not g.get("passed")],
            "gates": failure.gates,
            "kept_release": None if kept is None else os.path.relpath(kept, run_dir),
            "recipe": recipe.to_dict(),
        },
    )
    failure.kept_release, failure.record = kept, record
