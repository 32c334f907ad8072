"""Runs the stages of one recipe in order, with a content-addressed stage cache and resume.

Each stage's outputs live in ``<run_dir>/stages/<stage>/<key>/`` where ``key`` hashes the stage's resolved settings,
the sha256 of every file its upstream stages produced and the factory's code version. A stage is skipped when its
directory already holds ``stage.json`` (written last). Work happens in ``<key>.partial/``, which survives a crash or
Ctrl-C so that the next build resumes there (training stages keep resumable checkpoints in it), and is renamed into
place only when the stage finished: the cache never holds half a stage.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.files import json_default, sha256_tree, write_json, write_text
from factory.recipe import Recipe
from factory.registry import Registry

STAGE_FILE = "stage.json"


@dataclass
class StageOutput:
    """What a finished (or cached) stage left behind."""

    name: str
    key: str
    dir: Path
    files: dict[str, str]  # relative path -> sha256
    metrics: dict[str, Any]
    cached: bool
    seconds: float

    def path(self, relative: str) -> Path:
        """Absolute path of one of the stage's files; a missing file is a corrupt cache entry."""
        p = self.dir / relative
        if not p.exists():
            raise FileNotFoundError(
                f"{p} is missing from the {self.name} stage's cache; rerun with --force {self.name}"
            )
        return p


@dataclass
class StageContext:
    """Everything a stage function gets: the recipe, where to write, and its upstream stages' outputs."""

    recipe: Recipe
    work_dir: Path
    inputs: dict[str, StageOutput]
    echo: Callable[[str], None] = print
    progress: bool = True


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: which recipe settings and upstream stages it depends on, and the function that runs it."""

    name: str
    needs: tuple[str, ...]
    settings: Callable[[Recipe], Any]
    run: Callable[[StageContext], dict[str, Any]]  # writes files into ctx.work_dir, returns JSON-ready metrics
    summary: Callable[[dict[str, Any]], str] = lambda m: ""


STAGES: Registry[Stage] = Registry("stage")
ORDER: list[str] = []


def register_stage(stage: Stage) -> Stage:
    """Append a stage to the pipeline (stages run in registration order; needs must already be registered)."""
    for need in stage.needs:
        STAGES.get(need)
    STAGES.register(stage.name)(stage)
    ORDER.append(stage.name)
    return stage


class GateFailure(RuntimeError):
    """Raised by the release stage when a gate fails; carries the full gate table."""

    def __init__(self, message: str, gates: list[dict[str, Any]], validation: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.gates = gates
        self.validation = validation  # the validate stage's metrics, so the failure can show the accuracy table


@functools.cache
def code_version() -> str:
    """sha256 over the factory package's source: any code change invalidates the cache it could affect."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in {".py", ".yaml"} and "__pycache__" not in p.parts:
            digest.update(p.relative_to(root).as_posix().encode())
            digest.update(p.read_bytes())
    return digest.hexdigest()


def stage_key(stage: Stage, recipe: Recipe, inputs: dict[str, StageOutput]) -> str:
    """Content address of a stage run."""
    material = {
        "stage": stage.name,
        "settings": stage.settings(recipe),
        "inputs": {name: out.files for name, out in sorted(inputs.items())},
        "code": code_version(),
    }
    blob = json.dumps(material, sort_keys=True, default=json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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
) -> BuildResult:
    """Run every stage of ``recipe`` (or up to ``until``), reusing cached stages.

    Args:
        recipe: a validated recipe.
        force: stage names to re-run even if cached.
        until: stop after this stage.
        echo: where one-line stage summaries go.
        progress: show progress bars.

    Returns:
        The stage outputs and, when the release stage ran, the published release directory.

    Raises:
        UnknownNameError: a name in ``force``/``until`` is not a stage.
        GateFailure: a release gate failed (no release is published).
    """
    import factory.stages  # noqa: F401  (registers the stages)

    for name in (*force, *([until] if until else [])):
        STAGES.get(name)
    run_dir = run_dir_for(recipe)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "recipe.resolved.yaml", recipe.to_yaml())
    result = BuildResult(run_dir=run_dir)
    names = ORDER[: ORDER.index(until) + 1] if until else list(ORDER)
    for index, name in enumerate(names, 1):
        stage = STAGES.get(name)
        inputs = {need: result.stages[need] for need in stage.needs}
        out = _run_stage(stage, recipe, run_dir, inputs, name in force, echo, progress)
        result.stages[name] = out
        state = "cached " if out.cached else f"{out.seconds:6.1f}s"
        line = stage.summary(out.metrics)
        echo(f"[{index}/{len(names)}] {name:<9} {state}  {line}".rstrip())
    if "release" in result.stages:
        result.release_dir = _publish(run_dir, result.stages["release"].dir)
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
    key = stage_key(stage, recipe, inputs)
    final = run_dir / "stages" / stage.name / key
    partial = final.with_name(key + ".partial")
    if force:
        shutil.rmtree(final, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
    record = final / STAGE_FILE
    if record.is_file():
        info = json.loads(record.read_text())
        return StageOutput(stage.name, key, final, info["files"], info["metrics"], True, info["seconds"])
    shutil.rmtree(final, ignore_errors=True)  # a directory without its record is not a finished stage
    partial.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ctx = StageContext(recipe=recipe, work_dir=partial, inputs=inputs, echo=echo, progress=progress)
    try:
        metrics = stage.run(ctx)
    except GateFailure:
        shutil.rmtree(partial, ignore_errors=True)  # nothing of a refused release is kept
        raise
    seconds = time.perf_counter() - start
    write_text(partial / "recipe.resolved.yaml", recipe.to_yaml())
    files = sha256_tree(partial)
    write_json(
        partial / STAGE_FILE,
        {
            "stage": stage.name,
            "key": key,
            "settings": stage.settings(recipe),
            "inputs": {n: o.key for n, o in inputs.items()},
            "code": code_version(),
            "files": files,
            "metrics": metrics,
            "seconds": seconds,
        },
    )
    os.replace(partial, final)
    return StageOutput(stage.name, key, final, files, metrics, False, seconds)


def _publish(run_dir: Path, bundle: Path) -> Path:
    """Point ``<run_dir>/release`` at the finished bundle (atomically replaced symlink)."""
    link = run_dir / "release"
    tmp = run_dir / ".release.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(bundle, run_dir))
    os.replace(tmp, link)
    return link


def unpublish(recipe: Recipe) -> None:
    """Remove the ``release`` pointer after a failed gate (the older bundle itself stays in the stage cache)."""
    link = run_dir_for(recipe) / "release"
    if link.is_symlink():
        link.unlink()
