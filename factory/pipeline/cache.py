"""Content-addressed stage cache keys.

A stage's key hashes exactly: the settings it declares (``Stage.config``), a fingerprint of every outside file
those settings name (recipe fields marked ``path``), the *outputs* of its upstream stages (their files' sha256 and
artifact records, never their provenance copies, logs or timings) and the factory's code version. So changing a setting
re-runs the stage that reads it, and the stages after it only if its outputs actually changed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from factory.files import json_default, sha256_file
from factory.pipeline.stage import LOG_DIRS, PROVENANCE_FILES, Stage, StageOutput
from factory.recipe import Recipe


@functools.cache
def code_version() -> str:
    """sha256 over the factory package's source: any code change invalidates the cache it could affect."""
    root = Path(__file__).parents[1]
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in {".py", ".yaml"} and "__pycache__" not in p.parts:
            digest.update(p.relative_to(root).as_posix().encode())
            digest.update(p.read_bytes())
    return digest.hexdigest()


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


def path_fields(value: Any, prefix: str = "") -> dict[str, str]:
    """Every outside file a config names: recipe fields marked ``{"path": True}``, found through nested sections."""
    found: dict[str, str] = {}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("path") and isinstance(item, str):
                found[prefix + f.name] = item
            elif f.metadata.get("path") and isinstance(item, dict):  # {name: file} (teacher.checkpoints)
                found.update({f"{prefix}{f.name}.{k}": v for k, v in item.items() if isinstance(v, str)})
            else:
                found.update(path_fields(item, f"{prefix}{f.name}."))
    elif isinstance(value, dict):
        for key, item in value.items():
            found.update(path_fields(item, f"{prefix}{key}."))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.update(path_fields(item, f"{prefix}{i}."))
    return found


def output_digest(out: StageOutput) -> str:
    """What a downstream stage depends on: the stage's files (provenance copies and logs excluded) and artifacts."""
    material = {
        "files": {
            k: v for k, v in out.files.items() if k not in PROVENANCE_FILES and k.split("/", 1)[0] not in LOG_DIRS
        },
        "artifacts": [a.to_dict() for a in out.artifacts],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def stage_material(stage: Stage, recipe: Recipe, inputs: dict[str, StageOutput], nproc: int = 1) -> dict[str, Any]:
    """Everything a stage's key covers, as plain data (recorded in ``stage.json`` too).

    ``nproc`` (``factory build --nproc``) enters the key of a stage that trains, when it is above 1: its BatchNorm
    layers normalise each process's slice of the batch, so N processes train another model than one does.
    """
    config = stage.config(recipe)
    material = {
        "stage": stage.name,
        "config": json.loads(json.dumps(config, sort_keys=True, default=json_default)),
        # Editing a file the recipe names re-runs the stages that read it, though the recipe text is unchanged.
        "files": {name: fingerprint(p) for name, p in sorted(path_fields(config).items())},
        "inputs": {name: output_digest(out) for name, out in sorted(inputs.items())},
        "code": code_version(),
    }
    if nproc > 1 and stage.trains(config) is not None:
        material["world_size"] = nproc
    return material


def stage_key(material: dict[str, Any]) -> str:
    """Content address of a stage run, from :func:`stage_material`."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
