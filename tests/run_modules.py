"""Run every test module in a pytest process of its own, a few at a time: what `make test` calls.

One process per module: a single process that had loaded torch, NNCF, OpenVINO and ONNX Runtime objects through
~170 tests was killed by SIGSEGV while waiting for a child process (three runs out of three, never in a smaller set
of modules); separate processes also keep memory flat.

A few at a time: much of a module's time is single-threaded (imports, the ONNX exporter's tracing, NNCF's graph
building, child processes starting), so two modules side by side on two cores finish sooner than one after the
other. The end-to-end module is the longest by far and starts first; the others fill the other slot around it.
Each module's output is printed whole when it ends, with its wall time; exit 1 names the modules that failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# Longest first (measured: `BENCHMARKS.md`, "make test"), so the last module to start is a short one.
LONGEST_FIRST = ["test_build.py", "test_models.py", "test_distributed.py", "test_mst_kd.py", "test_loading.py"]
NO_TESTS_COLLECTED = 5  # pytest's exit code when a marker expression deselects a whole module


def ordered_modules(names: list[str] | None = None) -> list[Path]:
    """The test modules, the known long ones first, then the rest by name."""
    modules = sorted(TESTS.glob("test_*.py")) if not names else [Path(n).resolve() for n in names]
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    return sorted(modules, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def run_module(module: Path, pytest_args: list[str]) -> tuple[Path, int, str, float]:
    """``python -m pytest -q ARGS MODULE`` from the repository root: its exit code, output and wall seconds."""
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *pytest_args, str(module.relative_to(TESTS.parent))],
        cwd=TESTS.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return module, out.returncode, out.stdout, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", "-j", type=int, default=int(os.environ.get("TEST_JOBS", "2")), help="modules at once")
    parser.add_argument("-m", dest="marker", default=None, help="pytest marker expression, passed on")
    parser.add_argument("modules", nargs="*", help="test module files (default: every tests/test_*.py)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    pytest_args = ["-m", args.marker] if args.marker else []
    modules = ordered_modules(args.modules)
    failed: list[str] = []
    lock = threading.Lock()
    start = time.monotonic()

    def report(result: tuple[Path, int, str, float]) -> None:
        module, code, output, seconds = result
        with lock:  # one module's output at a time, whole
            print(f"==== {module.name} ({seconds:.0f} s, exit {code})", flush=True)
            print(output.rstrip(), flush=True)
            if code not in (0, NO_TESTS_COLLECTED):
                failed.append(module.name)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(run_module, m, pytest_args) for m in modules]:
            future.add_done_callback(lambda f: report(f.result()))
    print(f"{len(modules)} modules in {time.monotonic() - start:.0f} s, {args.jobs} at a time", flush=True)
    if failed:
        print("FAILED modules: " + " ".join(sorted(failed)), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
