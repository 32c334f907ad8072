"""The release manifest: what a release bundle holds and how a target checks it (schema ``factory.release/3``).

A release directory holds its model files, the golden input, the target bundles and ``manifest.json``::

    {
      "format": "factory.release/3",
      "name": str,                      # recipe name
      "version": str,                   # the bundle is the directory <name>-<version>
      "description": str,
      "files": {relative_path: sha256_hex},   # every file of the bundle except manifest.json and manifest.sig;
                                        # a file present but not listed here fails verification
      "contract": ModelContract.to_dict(),    # the input contract, shared by every shipped artifact
      "artifacts": {name: {**Artifact.to_dict(), "metrics": {...}}},   # shipped artifacts only
      "reference": {...},               # the teacher's and the torch student's measurements, for comparison only
      "comparisons": {...},             # each artifact against its parent on the same pairs (paired intervals,
                                        # McNemar per group)
      "benchmark": {"sha256": str, "pairs": int, "groups": [str], "distances": "pair_distances.npz",
                    "labels": "benchmark_labels.npz"},   # sha256 of the data stage's benchmark.npz; its labels
      "thresholds": {                   # operating thresholds on the cosine similarity of two embeddings
        "score": str,
        "artifacts": {name: {"1e-03": {"threshold": float, "supported": bool, "unsupported": str?,
                                       "groups": {group: {...the same...}}}, "1e-04": {...}}}
      },
      "gates": [GateResult.to_dict()],  # every release gate (artifact x target x gate) and its outcome: all passed
      "targets": {name: {...}},         # what each deploy target measured; "bundle": its runner bundle here
      "fairness_ledger": [...],
      "golden": {
        "input": "golden_input.npy",    # preprocessed float32 1×3×H×W
        "image": "golden_input.png",    # the aligned face it was made from
        "embeddings": {artifact_name: [floats]}   # the build machine's embedding of the golden input
      },
      "licences": {"commercial_use": bool, "model_licence": str,
                   "inputs": {recipe_key: {"path": str, "licence": {"licence", "commercial", "url"} | null}}},
      "signature": null | {"algorithm": "ed25519", "file": "manifest.sig", "key_sha256": str},
      "lineage": {...}                  # where data, teacher and code came from
    }

Each golden embedding is checked against the artifact's own ``golden_min_cosine``
(:func:`factory.runtime.verify.verify_release`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from factory.files import read_json
from factory.runtime.artifacts import Artifact

MANIFEST_FILE = "manifest.json"
LABELS_FILE = "benchmark_labels.npz"  # the benchmark's pair labels, groups and subjects (no images)
MANIFEST_FORMAT = "factory.release/3"

# key -> the JSON type it must have
REQUIRED_KEYS: dict[str, type] = {
    "format": str,
    "name": str,
    "version": str,
    "description": str,
    "files": dict,
    "contract": dict,
    "artifacts": dict,
    "reference": dict,
    "benchmark": dict,
    "thresholds": dict,
    "gates": list,
    "targets": dict,
    "fairness_ledger": list,
    "golden": dict,
    "licences": dict,
    "lineage": dict,
}
GOLDEN_KEYS: dict[str, type] = {"input": str, "image": str, "embeddings": dict}
_JSON_TYPES = {str: "a string", dict: "an object", list: "a list"}


class ManifestError(ValueError):
    """A release manifest that is not a ``factory.release/3`` manifest, or is incomplete."""


def read_manifest(release_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a release directory.

    Args:
        release_dir: the release directory.

    Returns:
        The manifest as parsed JSON.

    Raises:
        FileNotFoundError: there is no manifest.
        ManifestError: it is not valid JSON, has another format, lacks a key, or a golden embedding names an
            artifact the manifest does not ship.

    """
    path = Path(release_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected a factory release directory")
    try:
        manifest = read_json(path)
    except ValueError as e:
        raise ManifestError(str(e)) from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(
            f"{path}: format is {manifest.get('format')!r}, a schema this verifier does not know (expected "
            f"{MANIFEST_FORMAT!r}; a release of another factory version is verified by that version)"
        )
    _check_keys(path, "", manifest, REQUIRED_KEYS)
    _check_keys(path, "golden.", manifest["golden"], GOLDEN_KEYS)
    signature = manifest.get("signature")
    if signature is not None and not (isinstance(signature, dict) and isinstance(signature.get("file"), str)):
        raise ManifestError(f"{path}: signature is {signature!r}, expected null or an object naming its file")
    artifacts = manifest_artifacts(manifest, path)
    for name in manifest["golden"]["embeddings"]:
        if name not in artifacts or not artifacts[name].shipped:
            raise ManifestError(
                f"{path}: golden.embeddings has {name!r}, expected it among the shipped artifacts "
                f"({', '.join(sorted(n for n, a in artifacts.items() if a.shipped)) or 'none'})"
            )
    return manifest


def manifest_artifacts(manifest: dict[str, Any], source: str | os.PathLike[str] = "manifest") -> dict[str, Artifact]:
    """The manifest's artifact records (their ``metrics`` left out); ``source`` names the file in errors.

    Raises:
        ManifestError: an entry is not a valid :class:`Artifact` record or is filed under another name.

    """
    artifacts = {}
    for name, entry in manifest["artifacts"].items():
        if not isinstance(entry, dict):
            raise ManifestError(f"{source}: artifacts.{name} is {type(entry).__name__}, expected an object")
        try:
            artifact = Artifact.from_dict({k: v for k, v in entry.items() if k != "metrics"})
        except (TypeError, ValueError) as e:
            raise ManifestError(f"{source}: artifacts.{name}: {e}") from None
        if artifact.name != name:
            raise ManifestError(f"{source}: artifacts.{name} is named {artifact.name!r}, expected {name!r}")
        artifacts[name] = artifact
    return artifacts


def _check_keys(path: Path, prefix: str, data: dict[str, Any], required: dict[str, type]) -> None:
    missing = [k for k in required if k not in data]
    if missing:
        raise ManifestError(f"{path}: missing {', '.join(prefix + k for k in missing)}")
    for key, kind in required.items():
        if not isinstance(data[key], kind):
            raise ManifestError(f"{path}: {prefix}{key} is {type(data[key]).__name__}, expected {_JSON_TYPES[kind]}")
