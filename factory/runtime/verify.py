"""Verify a release bundle on the target with numpy and the bundle's runtimes only.

In order: the manifest's own sha256 (against the one printed at release, when given), its ed25519 signature (with
the public key, when given; a signed manifest without one is reported as not checked), the gates it records (all
passed: a bundle of a refused build is not a release), every listed file's sha256, every file present but not
listed, and last the golden input run through each artifact: the cosine similarity with the recorded embedding
must reach the artifact's ``golden_min_cosine``. A file that failed its checksum is never handed to a runtime.

Usage: python -m factory.runtime.verify RELEASE_DIR [--threads N] [--public-key PEM] [--manifest-sha256 HEX]
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
from factory.runtime.signing import SIGNATURE_FILE, SigningError, verify_signature


@dataclass(frozen=True)
class Check:
    """One verification step and its outcome."""

    passed: bool
    message: str

    def line(self) -> str:
        """The line printed for it: ``ok   MESSAGE`` or ``FAIL MESSAGE``."""
        return ("ok   " if self.passed else "FAIL ") + self.message


def verify_release(
    release_dir: str | os.PathLike[str],
    threads: int = 1,
    public_key: str | os.PathLike[str] | None = None,
    manifest_sha256: str | None = None,
) -> list[Check]:
    """Check a release directory: manifest hash and signature, recorded gates, files, golden embeddings.

    Args:
        release_dir: the directory holding ``manifest.json``.
        threads: CPU threads of each runtime.
        public_key: an ed25519 public key (PEM): the manifest's signature must verify with it.
        manifest_sha256: the manifest's sha256 as the build printed it: the manifest must have it.

    Returns:
        Every check: the manifest's (hash, signature, gates), the files' (sorted), the unlisted files, then one
        golden check per artifact in manifest order.

    Raises:
        FileNotFoundError: no manifest.
        ManifestError: the manifest is unreadable or not a ``factory.release/3`` manifest.

    """
    release = Path(release_dir)
    manifest = read_manifest(release)
    artifacts = manifest_artifacts(manifest, release / MANIFEST_FILE)
    checks = _manifest_checks(release, manifest, public_key, manifest_sha256)
    intact = set()
    bundles: dict[str, int] = {}  # the target bundles' intact files, one line per bundle
    for name, digest in sorted(manifest["files"].items()):
        path = release / name
        ok = path.is_file() and not path.is_symlink() and sha256_file(path) == digest
        if ok:
            intact.add(name)
        if ok and name.startswith("targets/") and name.count("/") > 1:
            folder = "/".join(name.split("/")[:2]) + "/"
            bundles[folder] = bundles.get(folder, 0) + 1
            continue
        checks.append(Check(ok, f"sha256 {name}: {'ok' if ok else _what_differs(path)}"))
    checks += [Check(True, f"sha256 {folder}: {n} files ok") for folder, n in sorted(bundles.items())]
    checks += [
        Check(False, f"unlisted {name}: in the bundle but not in manifest.json")
        for name in _unlisted(release, manifest)
    ]
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


def _manifest_checks(
    release: Path, manifest: dict[str, Any], public_key: str | os.PathLike[str] | None, expected: str | None
) -> list[Check]:
    """The manifest's own hash, its signature and the gates it records."""
    data = (release / MANIFEST_FILE).read_bytes()
    digest = sha256_file(release / MANIFEST_FILE)
    if expected is None:
        checks = [Check(True, f"manifest sha256 {digest} (compare with the build's, or pass --manifest-sha256)")]
    else:
        same = digest == expected.strip().lower()
        checks = [Check(same, f"manifest sha256 {digest}" + ("" if same else f", expected {expected} (edited)"))]
    signature = manifest.get("signature")
    sig_path = release / (signature or {}).get("file", SIGNATURE_FILE)
    if signature is None:
        if public_key is not None:
            checks.append(Check(False, "signature: the manifest is not signed, and --public-key asks for one"))
    elif not sig_path.is_file():
        checks.append(Check(False, f"signature: the manifest says it is signed, but {sig_path.name} is missing"))
    elif public_key is None:
        checks.append(Check(True, f"signature {sig_path.name}: present, not checked (pass --public-key)"))
    else:
        try:
            key = verify_signature(data, sig_path.read_text(encoding="ascii", errors="replace"), public_key)
            checks.append(Check(True, f"signature {sig_path.name}: valid, ed25519 key sha256 {key[:16]}"))
        except SigningError as e:
            checks.append(Check(False, f"signature {sig_path.name}: {e}"))
    failed = [g for g in manifest["gates"] if not (isinstance(g, dict) and g.get("passed") is True)]
    shown = ", ".join(f"{g.get('artifact')} {g.get('gate')}" if isinstance(g, dict) else repr(g) for g in failed[:3])
    if failed:
        checks.append(Check(False, f"gates: {len(failed)} recorded as failed ({shown}): a refused build is no release"))
    else:
        checks.append(Check(True, f"gates: {len(manifest['gates'])} recorded, all passed"))
    return checks


def _unlisted(release: Path, manifest: dict[str, Any]) -> list[str]:
    """Every entry under ``release`` that the manifest does not account for (a link counts, whatever it names)."""
    allowed = set(manifest["files"]) | {MANIFEST_FILE}
    if manifest.get("signature") is not None:
        allowed.add(manifest["signature"].get("file", SIGNATURE_FILE))
    found = []
    for path in sorted(release.rglob("*")):
        name = path.relative_to(release).as_posix()
        if (path.is_file() or path.is_symlink()) and (name not in allowed or path.is_symlink()):
            found.append(name)
    return found


def verify_and_print(
    release_dir: str | os.PathLike[str],
    threads: int = 1,
    public_key: str | os.PathLike[str] | None = None,
    manifest_sha256: str | None = None,
) -> int:
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
    checks = verify_release(release_dir, threads, public_key, manifest_sha256)
    for check in checks:
        print(check.line())
    return 0 if all(c.passed for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    """Command line entry; returns the exit code of :func:`verify_and_print`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", type=Path, help="release directory holding manifest.json")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each runtime")
    parser.add_argument("--public-key", type=Path, help="ed25519 public key (PEM) the manifest must be signed with")
    parser.add_argument("--manifest-sha256", help="the manifest's sha256 as the build printed it")
    args = parser.parse_args(argv)
    return verify_and_print(args.release, args.threads, args.public_key, args.manifest_sha256)


def _what_differs(path: Path) -> str:
    if path.is_symlink():
        return "a link, not the listed file"
    return "MISMATCH: its content differs from the manifest's hash" if path.is_file() else "missing"


def _why_untrusted(name: str, manifest: dict[str, Any]) -> str:
    if name in manifest["files"]:
        return f"{name} failed its checksum"
    return f"{name} has no checksum in the manifest"


if __name__ == "__main__":
    sys.exit(main())
