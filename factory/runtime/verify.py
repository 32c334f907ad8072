"""Verify a release bundle on the target with numpy and the bundle's runtimes only.

Every file listed in ``manifest.json`` must have its recorded sha256; then the golden input is run through each
artifact that has a golden embedding, and the cosine similarity with the recorded embedding must reach the
artifact's ``golden_min_cosine``. A file that failed its checksum is never handed to a runtime.

Usage: python -m factory.runtime.verify RELEASE_DIR [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from factory.files import sha256_file
from factory.runtime.artifacts import open_runner
from factory.runtime.manifest import MANIFEST_FILE, ManifestError, manifest_artifacts, read_manifest


@dataclass(frozen=True)
class Check:
    """One verification step and its outcome."""

    passed: bool
    message: str

    def line(self) -> str:
        """The line printed for it: ``ok   MESSAGE`` or ``FAIL MESSAGE``."""
        return ("ok   " if self.passed else "FAIL ") + self.message


def verify_release(release_dir: str | os.PathLike[str], threads: int = 1) -> list[Check]:
    """Check a release directory's checksums and golden embeddings.

    Args:
        release_dir: the directory holding ``manifest.json``.
        threads: CPU threads of each runtime.

    Returns:
        Every check, checksums first (sorted by file), then one golden check per artifact in manifest order.

    Raises:
        FileNotFoundError: no manifest.
        ManifestError: the manifest is unreadable or not a ``factory.release/2`` manifest.

    """
    release = Path(release_dir)
    manifest = read_manifest(release)
    artifacts = manifest_artifacts(manifest, release / MANIFEST_FILE)
    checks, intact = [], set()
    for name, digest in sorted(manifest["files"].items()):
        path = release / name
        ok = path.is_file() and sha256_file(path) == digest
        checks.append(Check(ok, f"sha256 {name}: {'ok' if ok else 'MISMATCH or missing'}"))
        if ok:
            intact.add(name)
    golden = manifest["golden"]
    if golden["input"] not in intact:
        return [*checks, Check(False, f"golden: not run, {_why_untrusted(golden['input'], manifest)}")]
    x = np.load(release / golden["input"], allow_pickle=False)
    for name, expected in golden["embeddings"].items():
        artifact = artifacts[name]
        untrusted = [f for f in artifact.files if f not in intact]
        if untrusted:
            reasons = ", ".join(_why_untrusted(f, manifest) for f in untrusted)
            checks.append(Check(False, f"golden {name}: not run, {reasons}"))
            continue
        try:
            got = np.asarray(open_runner(artifact, release, threads=threads)(x), dtype=np.float64)[0]
        except Exception as e:  # a target reports on every artifact, even when one runtime is missing or broken
            checks.append(Check(False, f"golden {name}: could not run ({type(e).__name__}: {e})"))
            continue
        want = np.asarray(expected, dtype=np.float64)
        if got.shape != want.shape:
            checks.append(Check(False, f"golden {name}: embedding shape {got.shape}, recorded {want.shape}"))
            continue
        cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
        limit = artifact.golden_min_cosine
        checks.append(Check(cosine >= limit, f"golden {name}: cosine {cosine:.6f} (limit {limit})"))
    return checks


def verify_and_print(release_dir: str | os.PathLike[str], threads: int = 1) -> int:
    """Verify ``release_dir``, print one line per check and return the exit code.

    Returns:
        0 when every check passed, 1 when any failed, 2 when the manifest is missing or unreadable (one line on
        stderr naming it).

    """
    try:
        read_manifest(release_dir)
    except (OSError, ManifestError) as e:
        print(e, file=sys.stderr)
        return 2
    checks = verify_release(release_dir, threads=threads)
    for check in checks:
        print(check.line())
    return 0 if all(c.passed for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    """Command line entry (``RELEASE_DIR [--threads N]``); returns the exit code of :func:`verify_and_print`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", type=Path, help="release directory holding manifest.json")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each runtime")
    args = parser.parse_args(argv)
    return verify_and_print(args.release, args.threads)


def _why_untrusted(name: str, manifest: dict[str, Any]) -> str:
    if name in manifest["files"]:
        return f"{name} failed its checksum"
    return f"{name} has no checksum in the manifest"


if __name__ == "__main__":
    sys.exit(main())
