"""Runs the stages of one recipe in order, with a content-addressed stage cache and resume, and publishes the release.

Each stage's outputs live in ``<run_dir>/stages/<stage>/<key>/`` (the key: :mod:`factory.pipeline.cache`). A stage
is skipped when its directory already holds ``stage.json`` (written last). Work happens in ``<key>.partial/``, which
survives a crash or Ctrl-C so that the next build resumes there (training stages keep resumable checkpoints in it),
and is renamed into place only when the stage finished: the cache never holds half a stage.

The pipeline's rules live here, once: a stage that ``publishes`` becomes ``<run_dir>/release`` (an atomically
replaced symlink) when it finishes, and a failed gate removes that pointer, so ``release`` never names a bundle
whose gates did not pass on the current recipe.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from factory.files import sha256_tree, write_json, write_text
from factory.pipeline.cache import stage_key, stage_material
from factory.pipeline.stage import STAGE_FILE, GateFailure, Stage, StageContext, StageOutput
from factory.recipe import Recipe
from factory.registry import Registry
from factory.runtime.artifacts import Artifact


@dataclass
class BuildResult:
    """The outcome of :func:`build`."""

    run_dir: Path
    stages: dict[str, StageOutput] = field(default_factory=dict)
    release_dir: Path | None = None


def run_dir_for(recipe: Recipe) -> Path:
    """Where a recipe's outputs go (``run_dir`` or ``runs/<name>``)."""
    return Path(recipe.run_dir) if recipe.run_dir else Path("runs") / recipe.name


def build(
    recipe: Recipe,
    force: tuple[str, ...] = (),
    until: str | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    stages: Sequence[Stage] | None = None,
) -> BuildResult:
    """Run every stage of ``recipe`` (or up to ``until``), reusing cached stages.

    Args:
        recipe: a validated recipe.
        force: stage names to re-run even if cached.
        until: stop after this stage.
        echo: where one-line stage summaries go.
        progress: show progress bars.
        stages: the stage list (default: :data:`factory.pipeline.stages.STAGES`).

    Returns:
        The stage outputs and, when a publishing stage ran, the published release directory.

    Raises:
        UnknownNameError: a name in ``force``/``until`` is not a stage.
        GateFailure: a release gate failed; ``<run_dir>/release`` no longer exists.
    """
    if stages is None:
        from factory.pipeline.stages import STAGES as stages
    by_name: Registry[Stage] = Registry("stage")
    for stage in stages:
        for need in stage.needs:
            by_name.get(need)  # a stage may only need stages listed before it
        by_name.register(stage.name)(stage)
    for name in (*force, *([until] if until else [])):
        by_name.get(name)
    order = [s.name for s in stages]
    names = order[: order.index(until) + 1] if until else order
    run_dir = run_dir_for(recipe)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "recipe.resolved.yaml", recipe.to_yaml())
    result = BuildResult(run_dir=run_dir)
    for index, name in enumerate(names, 1):
        stage = by_name.get(name)
        inputs = {need: result.stages[need] for need in stage.needs}
        try:
            out = _run_stage(stage, recipe, run_dir, inputs, name in force, echo, progress)
        except GateFailure:
            unpublish(run_dir)
            raise
        result.stages[name] = out
        state = "cached " if out.cached else f"{out.seconds:6.1f}s"
        line = stage.summary(out.metrics)
        echo(f"[{index}/{len(names)}] {name:<9} {state}  {line}".rstrip())
        if stage.publishes:
            result.release_dir = _publish(run_dir, out.dir)
    return result


def _run_stage(
    stage: Stage,
    recipe: Recipe,
    run_dir: Path,
    inputs: dict[str, StageOutput],
    force: bool,
    echo: Callable[[str], None],
    progress: bool,
) -> StageOutput:
    material = stage_material(stage, recipe, inputs)
    key = stage_key(material)
    final = run_dir / "stages" / stage.name / key
    partial = final.with_name(key + ".partial")
    if force:
        shutil.rmtree(final, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
    record = final / STAGE_FILE
    if record.is_file():
        info = json.loads(record.read_text())
        artifacts = [Artifact.from_dict(a) for a in info["artifacts"]]
        return StageOutput(stage.name, key, final, info["files"], info["metrics"], artifacts, True, info["seconds"])
    shutil.rmtree(final, ignore_errors=True)  # a directory without its record is not a finished stage
    partial.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ctx = StageContext(
        config=stage.config(recipe), work_dir=partial, inputs=inputs, recipe=recipe, echo=echo, progress=progress
    )
    try:
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


def _publish(run_dir: Path, bundle: Path) -> Path:
    """Point ``<run_dir>/release`` at the finished bundle (atomically replaced symlink)."""
    link = run_dir / "release"
    tmp = run_dir / ".release.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(bundle, run_dir))
    os.replace(tmp, link)
    return link


def unpublish(run_dir: Path) -> None:
    """Remove the ``release`` pointer after a failed gate (the older bundle itself stays in the stage cache)."""
    link = run_dir / "release"
    if link.is_symlink():
        link.unlink()
