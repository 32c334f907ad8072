"""``factory clean``: remove what the builds of a run directory left behind and its recipe no longer reaches.

Kept: every stage directory the next build of the recipe would use (finished, or ``.partial`` and so resumable) and
the bundle ``release`` names (the last good release, even when an older recipe built it). Removed: other keys'
stage directories and ``.partial`` folders, folders of stages the pipeline no longer has, and temporary files of
interrupted atomic writes. It holds the build lock, so it never deletes under a running build.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from factory.pipeline.build import cached_output, current_release, run_dir_for, stage_registry
from factory.pipeline.cache import stage_key, stage_material
from factory.pipeline.lock import run_dir_lock
from factory.pipeline.stage import Stage, StageOutput
from factory.recipe import Recipe


@dataclass
class CleanResult:
    """What :func:`clean` removed (or, dry, would remove)."""

    run_dir: Path
    removed: list[Path] = field(default_factory=list)
    freed_bytes: int = 0


def reachable_keys(recipe: Recipe, stages: Sequence[Stage] | None = None, nproc: int = 1) -> dict[str, str]:
    """Stage name -> the cache key the next build of ``recipe`` would use, for each stage whose inputs are built.

    The next build is one with ``--nproc nproc`` (a training stage's key includes its number of processes). A stage
    whose upstream is not finished has no computable key (it depends on the upstream's output): none of its
    directories can be the ones the next build uses.
    """
    by_name, order = stage_registry(stages)
    stages_dir = run_dir_for(recipe) / "stages"
    outputs: dict[str, StageOutput] = {}
    keys: dict[str, str] = {}
    for name in order:
        stage = by_name.get(name)
        if any(need not in outputs for need in stage.needs):
            continue
        key = stage_key(stage_material(stage, recipe, {need: outputs[need] for need in stage.needs}, nproc))
        keys[name] = key
        cached = cached_output(name, key, stages_dir / name / key)
        if cached is not None:
            outputs[name] = cached
    return keys


def clean(
    recipe: Recipe, stages: Sequence[Stage] | None = None, dry_run: bool = False, wait: bool = False, nproc: int = 1
) -> CleanResult:
    """Remove (or with ``dry_run`` only list) what ``recipe``'s run directory holds that its next build would not use.

    The next build is one with ``--nproc nproc``: training stages trained on another number of processes have other
    keys, and are removed.

    Raises:
        RunDirBusy: a build of this run directory is running (and ``wait`` is false).
    """
    run_dir = run_dir_for(recipe)
    result = CleanResult(run_dir)
    if not run_dir.is_dir():
        return result
    with run_dir_lock(run_dir, wait=wait, echo=lambda line: None):
        keys = reachable_keys(recipe, stages, nproc)
        known = set(stage_registry(stages)[1])
        release = current_release(run_dir)
        doomed: list[Path] = []
        stages_dir = run_dir / "stages"
        for stage_dir in sorted(p for p in stages_dir.glob("*") if p.is_dir()):
            if stage_dir.name not in known:
                doomed.append(stage_dir)
                continue
            for entry in sorted(stage_dir.iterdir()):
                key = entry.name.removesuffix(".partial")
                if key == keys.get(stage_dir.name) or (
                    release is not None and (entry.resolve() == release or entry.resolve() in release.parents)
                ):
                    continue
                doomed.append(entry)
        # Temporary files of atomic writes a killed process left (factory.files.atomic_path names them .X.*.partial).
        leftovers = [p for p in sorted(run_dir.rglob(".*.partial")) if p.is_file()]
        doomed += [p for p in leftovers if not any(d == p or d in p.parents for d in doomed)]
        doomed += [p for p in (run_dir / ".release.tmp",) if p.is_symlink()]
        for path in doomed:
            result.freed_bytes += _size(path)
            result.removed.append(path)
            if not dry_run:
                _remove(path)
    return result


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    return total


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
