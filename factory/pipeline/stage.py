"""What a pipeline stage is, what it gets and what it leaves behind.

A stage declares, next to its code, the recipe settings it reads (``config``); the build hands it exactly those as
``ctx.config`` and hashes them (and the content of every file they name) into its cache key with its upstream stages'
outputs. A stage returns a :class:`StageResult`: JSON-ready metrics and the
:class:`~factory.runtime.artifacts.Artifact` records of the models it wrote. Everything downstream (validation, gates,
the release) iterates over those records; file names are written only by the stage that produces them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.files import read_json
from factory.recipe import Recipe, TrainConfig
from factory.registry import Registry, UnknownNameError
from factory.runtime.artifacts import Artifact, open_runner
from factory.runtime.runners import Runner

STAGE_FILE = "stage.json"
# Copies kept for provenance, not outputs: they never enter a downstream stage's cache key, so a setting that leaves a
# stage's real outputs byte-identical does not re-run the stages after it.
PROVENANCE_FILES = frozenset({"recipe.resolved.yaml"})
# Folders of logs a stage may write beside its outputs (training's TensorBoard event files, which hold wall-clock times
# and the host's name): like the provenance copies, they never enter a downstream stage's cache key.
LOG_DIRS = frozenset({"tensorboard"})


@dataclass(frozen=True)
class BuiltArtifact:
    """An artifact record together with the directory its files live in."""

    artifact: Artifact
    root: Path

    @property
    def name(self) -> str:
        """The artifact's name."""
        return self.artifact.name

    @property
    def path(self) -> Path:
        """The file its runtime opens."""
        return self.root / self.artifact.files[0]

    def runner(self, threads: int = 1) -> Runner:
        """A runner over the artifact with its recorded runtime and options."""
        return open_runner(self.artifact, self.root, threads=threads)


@dataclass
class StageOutput:
    """What a finished (or cached) stage left behind."""

    name: str
    key: str
    dir: Path
    files: dict[str, str]  # relative path -> sha256
    metrics: dict[str, Any]
    artifacts: list[Artifact]
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

    def built(self) -> list[BuiltArtifact]:
        """The stage's artifacts, located."""
        return [BuiltArtifact(a, self.dir) for a in self.artifacts]


@dataclass
class StageContext:
    """Everything a stage function gets: its declared settings, where to write, and its upstream stages' outputs."""

    config: dict[str, Any]  # what the stage's ``config(recipe)`` returned: the only settings a stage reads
    work_dir: Path
    inputs: dict[str, StageOutput]
    recipe: Recipe  # for provenance only (the release's lineage); settings come from ``config``
    echo: Callable[[str], None] = print
    progress: bool = True

    def artifacts(self) -> list[BuiltArtifact]:
        """Every artifact of the upstream stages, in build order."""
        return [built for out in self.inputs.values() for built in out.built()]

    def artifact(self, name: str) -> BuiltArtifact:
        """One upstream artifact by name."""
        found = {b.name: b for b in self.artifacts()}
        if name not in found:
            raise UnknownNameError("artifact", name, list(found))
        return found[name]


@dataclass
class StageResult:
    """What a stage function returns: metrics for the record and the artifacts it wrote into ``ctx.work_dir``."""

    metrics: dict[str, Any]
    artifacts: list[Artifact] = field(default_factory=list)


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: the settings it reads, the stages it needs and the function that runs it."""

    name: str
    needs: tuple[str, ...]
    config: Callable[[Recipe], dict[str, Any]]
    run: Callable[[StageContext], StageResult]
    summary: Callable[[dict[str, Any]], str] = lambda m: ""
    publishes: bool = False  # its directory is the build's release: pointed at by ``<run_dir>/release``
    # Given its config, the settings it runs the training loop with (None: it does not train this time): such a stage
    # runs as ``--nproc`` DDP processes under torchrun (:mod:`factory.pipeline.launch`).
    training: Callable[[dict[str, Any]], TrainConfig | None] | None = None

    def trains(self, config: dict[str, Any]) -> TrainConfig | None:
        """The training settings of this stage with ``config``, or None when it does not run the training loop."""
        return None if self.training is None else self.training(config)


class GateFailure(RuntimeError):
    """Raised by the release stage when a gate fails; carries the full gate table."""

    def __init__(self, message: str, gates: list[dict[str, Any]], validation: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.gates = gates
        self.validation = validation  # the validate stage's metrics, so the failure can show the accuracy table
        self.kept_release: Path | None = None  # set by the build: the older bundle ``release`` still names
        self.record: Path | None = None  # set by the build: the failure record beside it


def run_dir_for(recipe: Recipe) -> Path:
    """Where a recipe's outputs go (``run_dir`` or ``runs/<name>``)."""
    return Path(recipe.run_dir) if recipe.run_dir else Path("runs") / recipe.name


def registry_of(stages: Sequence[Stage]) -> tuple[Registry[Stage], list[str]]:
    """The stages by name (unknown names get a did-you-mean) and their order."""
    by_name: Registry[Stage] = Registry("stage")
    for stage in stages:
        for need in stage.needs:
            by_name.get(need)  # a stage may only need stages listed before it
        by_name.register(stage.name)(stage)
    return by_name, [s.name for s in stages]


def cached_output(name: str, key: str, final: Path) -> StageOutput | None:
    """The finished stage at ``final``, or None when it has no record (``stage.json`` is written last)."""
    record = final / STAGE_FILE
    if not record.is_file():
        return None
    info = read_json(record)
    artifacts = [Artifact.from_dict(a) for a in info["artifacts"]]
    return StageOutput(name, key, final, info["files"], info["metrics"], artifacts, True, info["seconds"])
