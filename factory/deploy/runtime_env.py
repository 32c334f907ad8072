"""Fresh Python environments that hold only numpy and one runtime: where a local target runs its bundle.

A bundle's runner must need nothing but the target's runtime and numpy; running it on this machine inside the
factory's own environment (torch, NNCF, the factory installed) would prove nothing. So a local target runs it in a
new virtual environment (``python -m venv``, no system site-packages) whose site-packages holds links to exactly the
distributions the runtime needs, found through their installed metadata and requirements (numpy, the runtime, and
what they require: for openvino its telemetry, for onnxruntime flatbuffers, protobuf, packaging). No package is
downloaded: the build never needs the network. ``import torch`` and ``import factory`` fail there; the runner gets
the factory's runtime layer from the bundle itself.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from factory.files import write_text

# The distribution each runtime is installed as, and console scripts to recreate in the environment.
RUNTIME_DISTRIBUTIONS: dict[str, str] = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
SCRIPTS: dict[str, dict[str, str]] = {"openvino": {"benchmark_app": "openvino.tools.benchmark.main:main"}}
STAMP = ".factory-runtime-env"


class RuntimeEnvError(RuntimeError):
    """The environment could not be made (the runtime is not installed here, or venv failed)."""


def required_distributions(runtime: str) -> list[metadata.Distribution]:
    """numpy, the runtime's distribution and, transitively, every distribution they require (no extras)."""
    name = RUNTIME_DISTRIBUTIONS.get(runtime, runtime)
    todo, seen, found = ["numpy", name], set(), []
    while todo:
        wanted = _canonical(todo.pop())
        if wanted in seen:
            continue
        seen.add(wanted)
        try:
            dist = metadata.distribution(wanted)
        except metadata.PackageNotFoundError:
            if wanted == _canonical(name):
                raise RuntimeEnvError(
                    f"{name} is not installed in {sys.prefix}: a local {runtime} target needs it"
                ) from None
            raise RuntimeEnvError(f"{wanted}, which {name} requires, is not installed in {sys.prefix}") from None
        found.append(dist)
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return found


def isolated_python(runtime: str, cache: str | os.PathLike[str]) -> Path:
    """The interpreter of an environment holding only numpy and ``runtime`` (made once under ``cache``).

    Raises:
        RuntimeEnvError: the runtime is not installed in this environment, or the venv could not be made.

    """
    dists = required_distributions(runtime)
    signature = "\n".join(sorted(f"{d.metadata['Name']}=={d.version}@{d.locate_file('')}" for d in dists))
    env = Path(cache) / runtime
    python = env / "bin" / "python"
    stamp = env / STAMP
    if python.exists() and stamp.is_file() and stamp.read_text() == signature:
        return python
    shutil.rmtree(env, ignore_errors=True)
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(env)], capture_output=True, text=True, timeout=120
    )
    if made.returncode != 0:
        raise RuntimeEnvError(f"python -m venv {env} failed: {made.stderr.strip()}")
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    for dist in dists:
        for top in _top_level_entries(dist):
            link = site / top.name
            if not link.exists():
                link.symlink_to(top)
    for script, target in SCRIPTS.get(runtime, {}).items():
        module, function = target.split(":")
        path = env / "bin" / script
        write_text(path, f"#!{python}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n")
        path.chmod(0o755)
    write_text(stamp, signature)
    return python


def _top_level_entries(dist: metadata.Distribution) -> list[Path]:
    """The files and folders a distribution put directly into site-packages (its packages, .libs, dist-info)."""
    entries = set()
    for file in dist.files or []:
        parts = Path(file).parts
        if parts and parts[0] not in ("..", "__pycache__"):
            entries.add(parts[0])
    return [Path(dist.locate_file(entry)) for entry in sorted(entries)]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
