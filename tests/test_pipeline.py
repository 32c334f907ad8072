"""The pipeline on toy stages: cache keys, resume from ``.partial``, publishing and failed gates, one build per run
directory, clean, artifacts as records."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from helpers import holding_build_lock

from factory.files import write_text
from factory.pipeline.build import build
from factory.pipeline.clean import clean, reachable_keys
from factory.pipeline.lock import RunDirBusy
from factory.pipeline.stage import GateFailure, Stage, StageContext, StageResult
from factory.recipe import Recipe
from factory.registry import UnknownNameError
from factory.runtime.artifacts import Artifact

RUNS: list[str] = []


def make(ctx: StageContext) -> StageResult:
    RUNS.append("make")
    # Reads two settings; only the seed shapes the output, the description is carried along unused.
    write_text(ctx.work_dir / "model.txt", f"weights for seed {ctx.config['seed']}")
    # A log that differs on every run, as TensorBoard's event files do: it must not re-run the stages downstream.
    write_text(ctx.work_dir / "tensorboard" / "make" / "events.log", f"written at {time.time_ns()}")
    return StageResult({"described": ctx.config["description"]}, [Artifact("model", ("model.txt",), "torch")])


def derive(ctx: StageContext) -> StageResult:
    RUNS.append("derive")
    marker = ctx.work_dir / "progress.txt"
    if ctx.config["interrupt"] and not marker.exists():
        write_text(marker, "half done")  # what a training stage's resume checkpoint is
        raise KeyboardInterrupt
    source = ctx.artifact("model")
    write_text(ctx.work_dir / "small.txt", source.path.read_text().upper())
    resumed = marker.exists()
    marker.unlink(missing_ok=True)
    artifact = Artifact("small", ("small.txt",), "onnxruntime", derived_from="model", golden_min_cosine=0.99)
    return StageResult({"resumed": resumed}, [artifact])


def release(ctx: StageContext) -> StageResult:
    RUNS.append("release")
    if ctx.config["limit"] > 0.5:
        raise GateFailure("gate failed: toy", [{"gate": "toy", "passed": False}])
    names = [b.name for b in ctx.artifacts()]
    # The bundle is one versioned folder of the stage's directory, as the real release stage writes it.
    write_text(ctx.work_dir / "toy-1.0" / "bundle.txt", ",".join(names))
    return StageResult({"artifacts": names, "published": "toy-1.0"})


STAGES = (
    Stage("make", (), lambda r: {"seed": r.seed, "description": r.release.description}, make),
    Stage("derive", ("make",), lambda r: {"interrupt": not r.validate.flip}, derive),
    Stage("release", ("make", "derive"), lambda r: {"limit": r.gates.min_accuracy}, release, publishes=True),
)


def recipe(tmp_path: Path, **changes: object) -> Recipe:
    r = Recipe(name="toy", run_dir=str(tmp_path))
    r.gates.min_accuracy = 0.1
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            setattr(getattr(r, section), field, value)
        else:
            r = dataclasses.replace(r, **{section: value})
    return r


def run(r: Recipe, **kwargs: object) -> dict[str, bool]:
    RUNS.clear()
    result = build(r, echo=lambda line: None, progress=False, stages=STAGES, **kwargs)
    return {name: out.cached for name, out in result.stages.items()}


def test_second_build_is_cached_and_artifacts_flow_as_records(tmp_path: Path) -> None:
    assert run(recipe(tmp_path)) == {"make": False, "derive": False, "release": False}
    assert run(recipe(tmp_path)) == {"make": True, "derive": True, "release": True}
    assert RUNS == []
    result = build(recipe(tmp_path), echo=lambda line: None, progress=False, stages=STAGES)
    assert (result.release_dir / "bundle.txt").read_text() == "model,small"
    (small,) = result.stages["derive"].artifacts
    assert small.derived_from == "model" and small.shipped


def test_a_setting_that_leaves_outputs_identical_reruns_only_its_stage(tmp_path: Path) -> None:
    run(recipe(tmp_path))
    assert run(recipe(tmp_path, release__description="other words")) == {
        "make": False,
        "derive": True,
        "release": True,
    }
    # A setting that changes the output re-runs everything downstream.
    assert run(recipe(tmp_path, seed=1)) == {"make": False, "derive": False, "release": False}


def test_interrupted_stage_resumes_from_its_partial_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run(recipe(tmp_path, validate__flip=False))
    assert list((tmp_path / "stages" / "derive").glob("*.partial/progress.txt"))
    assert not list((tmp_path / "stages" / "derive").glob("*/stage.json"))
    result = build(recipe(tmp_path, validate__flip=False), echo=lambda line: None, progress=False, stages=STAGES)
    assert result.stages["make"].cached and result.stages["derive"].metrics["resumed"] is True
    assert not list((tmp_path / "stages" / "derive").glob("*.partial"))


def test_failed_gate_keeps_the_last_good_release_and_records_the_failure(tmp_path: Path) -> None:
    run(recipe(tmp_path))
    good = (tmp_path / "release").resolve()
    resolved = (tmp_path / "recipe.resolved.yaml").read_text()
    with pytest.raises(GateFailure) as failed:
        run(recipe(tmp_path, gates__min_accuracy=0.9))
    assert (tmp_path / "release").resolve() == good and (good / "bundle.txt").is_file()
    assert failed.value.kept_release == good
    record = json.loads((tmp_path / "release.failed.json").read_text())
    assert record["failed"] == [{"gate": "toy", "passed": False}]
    assert record["recipe"]["gates"]["min_accuracy"] == 0.9 and record["kept_release"] == os.path.relpath(
        good, tmp_path
    )
    assert (tmp_path / "recipe.resolved.yaml").read_text() == resolved  # still the recipe of the release
    assert not list((tmp_path / "stages" / "release").glob("*.partial"))
    run(recipe(tmp_path, seed=3))  # a passing build publishes and clears the failure record
    assert (tmp_path / "release").resolve() != good and not (tmp_path / "release.failed.json").exists()
    assert "seed: 3" in (tmp_path / "recipe.resolved.yaml").read_text()


def test_failed_gate_without_an_earlier_release_says_so(tmp_path: Path) -> None:
    with pytest.raises(GateFailure) as failed:
        run(recipe(tmp_path, gates__min_accuracy=0.9))
    assert failed.value.kept_release is None and not (tmp_path / "release").exists()
    assert not (tmp_path / "recipe.resolved.yaml").exists()


def test_builds_of_one_run_dir_take_turns(tmp_path: Path) -> None:
    with holding_build_lock(tmp_path) as pid, pytest.raises(RunDirBusy, match=f"pid {pid} "):
        run(recipe(tmp_path))
    assert not (tmp_path / "stages").exists()  # refused before any work
    assert run(recipe(tmp_path)) == {"make": False, "derive": False, "release": False}  # the kernel freed the lock


def test_clean_keeps_what_the_next_build_uses(tmp_path: Path) -> None:
    run(recipe(tmp_path))
    good = (tmp_path / "release").resolve()
    run(recipe(tmp_path, seed=1))  # another setting: its own keys, and now the release
    with pytest.raises(KeyboardInterrupt):
        run(recipe(tmp_path, seed=2, validate__flip=False))  # leaves a resumable .partial of seed 2
    (tmp_path / "stages" / "gone").mkdir()  # a stage the pipeline no longer has
    current = recipe(tmp_path, seed=2, validate__flip=False)
    keys = reachable_keys(current, STAGES)
    leftover = tmp_path / "stages" / "make" / keys["make"] / ".model.txt.x1.partial"  # a killed atomic write
    leftover.write_text("half a file")
    before = _entries(tmp_path)
    dry = clean(current, STAGES, dry_run=True)
    assert _entries(tmp_path) == before and dry.removed
    done = clean(current, STAGES)
    assert done.removed == dry.removed and done.freed_bytes == dry.freed_bytes > 0
    after = _entries(tmp_path)
    assert after["make"] == {keys["make"]} and after["derive"] == {keys["derive"] + ".partial"}
    release_of_seed_1 = (tmp_path / "release").resolve()
    assert release_of_seed_1.name == "toy-1.0" and (release_of_seed_1 / "bundle.txt").is_file()
    # the published folder's stage directory is kept whole
    assert release_of_seed_1 != good and after["release"] == {release_of_seed_1.parent.name}
    assert "gone" not in after and not leftover.exists()
    result = build(current, echo=lambda line: None, progress=False, stages=STAGES)  # resumes the kept .partial
    assert result.stages["make"].cached and result.stages["derive"].metrics["resumed"] is True


def _entries(run_dir: Path) -> dict[str, set[str]]:
    return {d.name: {e.name for e in d.iterdir()} for d in (run_dir / "stages").iterdir()}


def test_unknown_stage_names_and_undeclared_files(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'derive'"):
        run(recipe(tmp_path), force=("derve",))

    def liar(ctx: StageContext) -> StageResult:
        return StageResult({}, [Artifact("ghost", ("ghost.onnx",), "onnxruntime")])

    with pytest.raises(RuntimeError, match="did not write"):
        build(recipe(tmp_path), echo=lambda line: None, progress=False, stages=(Stage("liar", (), lambda r: {}, liar),))


def test_force_and_until(tmp_path: Path) -> None:
    run(recipe(tmp_path))
    assert run(recipe(tmp_path), force=("derive",), until="derive") == {"make": True, "derive": False}
