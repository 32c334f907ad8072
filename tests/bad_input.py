"""What every bad-input case must show: its exit code, the key or path it names, no traceback and no hang.

The tables live in tests/test_bad_*.py. A case runs the real CLI in-process (click's runner: torch is imported once
per module), or in a subprocess with a timeout where a hang is what is being tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner
from helpers import ROOT

from factory.cli import main

# The documented exit codes (factory --help), written out: a test must notice if they change.
EXIT_INPUT, EXIT_MACHINE = 2, 3


@dataclass
class Refusal:
    """How the CLI answered one bad input."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Case:
    """One row of a bad-input table.

    ``make(tmp)`` writes whatever the case needs under ``tmp`` (the current directory while it runs) and returns the
    CLI arguments; ``names`` must all appear in the output (the key, the path, what was expected); ``after(tmp)``
    asserts what must (not) have been written.
    """

    id: str
    make: Callable[[Path], Sequence[str]]
    exit_code: int
    names: Sequence[str | Callable[[Path], str]] = ()
    after: Callable[[Path], None] | None = None
    subprocess: bool = False  # run as `python -m factory` with a timeout (a hang is what is tested)
    timeout: float = 60.0
    max_lines: int | None = None  # a one-line error is one line


def invoke(args: Sequence[str], *, in_subprocess: bool = False, timeout: float = 60.0) -> Refusal:
    """Run ``factory ARGS`` in the current directory; fail the test on a traceback or a hang."""
    args = [str(a) for a in args]
    if in_subprocess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "factory", *args], capture_output=True, text=True, timeout=timeout, env=env
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"factory {' '.join(args)} hung (no answer in {timeout:.0f} s)") from None
        out = Refusal(done.returncode, done.stdout, done.stderr)
    else:
        result = CliRunner().invoke(main, args, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"factory {' '.join(args)} raised {result.exception!r}") from result.exception
        out = Refusal(result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in out.text, f"factory {' '.join(args)} printed a traceback:\n{out.text}"
    return out


def check_case(case: Case, tmp: Path) -> Refusal:
    """Run one table row in ``tmp`` (which must be the current directory) and check everything it promises."""
    args = case.make(tmp)
    out = invoke(args, in_subprocess=case.subprocess, timeout=case.timeout)
    assert out.exit_code == case.exit_code, f"exit {out.exit_code}, expected {case.exit_code}:\n{out.text}"
    for name in case.names:
        wanted = name(tmp) if callable(name) else name
        assert wanted in out.text, f"{wanted!r} not named in:\n{out.text}"
    if case.max_lines is not None:
        # Warnings about the recipe (an FMR target its benchmark cannot support) may come first; the error is one line.
        lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
        assert len(lines) <= case.max_lines, f"expected at most {case.max_lines} line(s):\n{out.stderr}"
    if case.after is not None:
        case.after(tmp)
    return out
