"""The artifact record: what every pipeline stage returns for each model file it produces.

An :class:`Artifact` names its files (relative to the directory that holds them), the runtime that opens them, its
precision, what it was converted from and how its producer checked it. The release manifest stores one
:meth:`Artifact.to_dict` per shipped artifact, and :func:`open_runner` runs any artifact the same way on the build
machine and on a target.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from factory.runtime.contract import ModelContract
from factory.runtime.runners import RUNTIMES, Runner

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Artifact:
    """One model artifact of a build.

    Attributes:
        name: e.g. ``"onnx_fp32"``; unique within a build.
        files: paths relative to the directory holding the artifact; ``files[0]`` is what its runtime opens.
        runtime: a :data:`~factory.runtime.runners.RUNTIMES` name (``"torch"``, ``"onnxruntime"``, ``"openvino"``,
            ``"tensorrt"``).
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        derived_from: the artifact it was converted or compressed from.
        golden_min_cosine: set when it ships in the release: its golden embedding is checked with this cosine.
        reference: measured for comparison only (the teacher): never gated, never shipped.
        options: runner options, e.g. ``{"precision": "f32"}`` for OpenVINO.
        contract: :meth:`ModelContract.to_dict` to run it with when its file carries none (black-box teachers).
        parity: its producer's check against ``derived_from`` (``min_cosine``, ``mean_cosine``, ``max_abs_diff``,
            ``n``).

    """

    name: str
    files: tuple[str, ...]
    runtime: str
    precision: str = "fp32"
    derived_from: str | None = None
    golden_min_cosine: float | None = None
    reference: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    contract: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # A list would make the frozen record mutable through the back door and unequal to its JSON round trip.
        object.__setattr__(self, "files", tuple(self.files))
        if not self.files:
            raise ValueError(f"artifact {self.name!r} has no files (files[0] is what its runtime opens)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"artifact {self.name!r}: precision {self.precision!r} is not one of {PRECISIONS}")
        if self.reference and self.golden_min_cosine is not None:
            raise ValueError(f"artifact {self.name!r} is a reference, so it is never shipped: drop golden_min_cosine")

    @property
    def shipped(self) -> bool:
        """Whether it goes into the release (it has a golden tolerance)."""
        return self.golden_min_cosine is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``files`` as a list); the form stored in the release manifest."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["files"] = list(self.files)
        data["options"] = dict(self.options)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        """Inverse of :meth:`to_dict`; unknown keys are an error so a newer record is never half-read.

        Raises:
            ValueError: unknown or missing keys, or invalid values.

        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"artifact record has unknown keys {sorted(unknown)} (known: {sorted(known)})")
        missing = {"name", "files", "runtime"} - set(data)
        if missing:
            raise ValueError(f"artifact record lacks {sorted(missing)}")
        return cls(**{**data, "files": tuple(data["files"]), "options": dict(data.get("options") or {})})

    def paths(self, root: str | Path) -> list[Path]:
        """Its files under ``root``, the directory holding the artifact."""
        return [Path(root) / f for f in self.files]


def open_runner(artifact: Artifact, root: str | Path, threads: int = 1) -> Runner:
    """Runner over ``artifact`` by its registered runtime, with its recorded contract and options.

    Args:
        artifact: the record.
        root: the directory holding its files.
        threads: CPU threads of the runtime.

    Returns:
        The runtime's :class:`~factory.runtime.runners.Runner`.

    """
    contract = ModelContract.from_dict(artifact.contract) if artifact.contract else None
    factory = RUNTIMES.get(artifact.runtime)
    return factory(Path(root) / artifact.files[0], threads=threads, contract=contract, **artifact.options)
