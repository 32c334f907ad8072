"""Bad input to builds and commands: CLI conventions, one build per run directory, machine faults, a NaN loss.

The table runs each case through the real CLI and checks its exit code, the option or path named, no traceback and
nothing written; the builds below run the shipped recipe shrunk to seconds.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bad_input import EXIT_INPUT, EXIT_MACHINE, ROOT, Case, check_case, invoke
from helpers import DEMO_RECIPE, TINY_BUILD, holding_build_lock

RECIPE, TINY = DEMO_RECIPE, TINY_BUILD


def build_args(run_dir: Path | str, *extra: str, until: str | None = "data") -> list[str]:
    args = ["build", str(RECIPE), "--no-progress", *(["--until", until] if until is not None else [])]
    for item in (f"run_dir={run_dir}", *TINY, *extra):
        args += ["--set", item]
    return args


def embeddings_npz(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp / "emb.npz"
    np.savez(path, embeddings=rng.normal(size=(40, 8)).astype(np.float32), issame=np.arange(20) % 2 == 0)
    return path


def nothing_under(name: str) -> Callable[[Path], None]:
    """A Case.after check: ``name`` was not written."""

    def after(tmp: Path) -> None:
        assert not (tmp / name).exists(), f"{name} was written"

    return after


CASES = [
    Case("until-empty", lambda t: build_args("run", until=""), EXIT_INPUT, ["unknown stage ''"], nothing_under("run")),
    Case("force-unknown", lambda t: [*build_args("run"), "--force", "relase"], EXIT_INPUT, ["did you mean 'release'"]),
    Case(
        "eval-model-with-embeddings",
        lambda t: ["eval", "--embeddings", embeddings_npz(t), "--model", "tinyfar_a"],
        EXIT_INPUT,
        ["--model has no effect with --embeddings"],
    ),
    Case(
        "eval-threads-with-embeddings",
        lambda t: ["eval", "--embeddings", embeddings_npz(t), "--threads", "1"],
        EXIT_INPUT,
        ["--threads has no effect with --embeddings"],
    ),
    Case(
        "eval-flip-with-embeddings",
        lambda t: ["eval", "--embeddings", embeddings_npz(t), "--no-flip"],
        EXIT_INPUT,
        ["--flip/--no-flip has no effect with --embeddings"],
    ),
    Case(
        "eval-benchmark-with-embeddings",
        lambda t: ["eval", "procedural", "--embeddings", embeddings_npz(t)],
        EXIT_INPUT,
        ["--embeddings FILE (which holds its own pairs)"],
    ),
    Case(
        "eval-weights-with-artifact",
        lambda t: ["eval", "procedural", "--artifact", "m.onnx", "--weights", "w.pth"],
        EXIT_INPUT,
        ["--weights belongs to --model"],
    ),
    Case("eval-threads-zero", lambda t: ["eval", "procedural", "--threads", "0"], EXIT_INPUT, ["'--threads'"]),
    Case("eval-bootstrap-zero", lambda t: ["eval", "procedural", "--bootstrap", "0"], EXIT_INPUT, ["'--bootstrap'"]),
    Case(
        "embed-batch-zero",
        lambda t: ["embed", "x.png", "--model", "tinyfar_a", "-o", "e.npz", "--batch-size", "0"],
        EXIT_INPUT,
        ["'--batch-size'"],
        nothing_under("e.npz"),
    ),
    Case(
        "embed-threads-too-many",
        lambda t: ["embed", "x.png", "--model", "tinyfar_a", "-o", "e.npz", "--threads", "100000"],
        EXIT_INPUT,
        ["'--threads'"],
        nothing_under("e.npz"),
    ),
    Case(
        "embed-weights-with-artifact",
        lambda t: ["embed", "x.png", "--artifact", "m.onnx", "--weights", "w.pth", "-o", "e.npz"],
        EXIT_INPUT,
        ["--weights belongs to --model"],
        nothing_under("e.npz"),
    ),
    Case(
        "preview-zero-identities",
        lambda t: ["data", "preview", "--identities", "0", "--out", "p"],
        EXIT_INPUT,
        ["'--identities'"],
        nothing_under("p"),
    ),
    Case("inspect-negative-sample", lambda t: ["data", "inspect", ".", "--sample", "-1"], EXIT_INPUT, ["'--sample'"]),
    Case("mix-negative-seed", lambda t: ["data", "mix", "a=x:1", "--seed", "-1"], EXIT_INPUT, ["'--seed'"]),
    Case("verify-threads-zero", lambda t: ["release", "verify", ".", "--threads", "0"], EXIT_INPUT, ["'--threads'"]),
    Case(
        "clean-bad-recipe",
        lambda t: ["clean", RECIPE, "--set", "run_dir=run", "--set", "seed=x"],
        EXIT_INPUT,
        ["--set", "seed"],
        nothing_under("run"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_command_lines(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_case(case, tmp_path)


def test_a_busy_run_dir_is_refused_naming_the_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    with holding_build_lock(run_dir) as pid:
        for args in (build_args(run_dir), ["clean", RECIPE, "--set", f"run_dir={run_dir}"]):
            out = invoke(args)
            assert out.exit_code == EXIT_INPUT and f"is being built by pid {pid} " in out.stderr, out.text
            assert "--wait" in out.stderr
        assert sorted(p.name for p in run_dir.iterdir()) == [".build.lock"]


def test_two_concurrent_builds_leave_one_consistent_cache(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "factory", *build_args(run_dir), "--wait"]
    # Both builds queue behind a held lock first, so they really contend (the data stage alone can take 0.5 s).
    with holding_build_lock(run_dir) as holder:
        procs = [
            subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"
        ]
        deadline = time.monotonic() + 120
        while _lock_waiters(run_dir / ".build.lock") < 2:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "builds did not queue"
            time.sleep(0.1)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(f"waiting for pid {holder} " in out for out, _ in outs), outs
    lines = [out for out, _ in outs]
    assert sorted("cached" in line for line in lines) == [False, True], lines  # one rendered, the other reused it
    (key,) = [p.name for p in (run_dir / "stages" / "data").iterdir()]
    assert not key.endswith(".partial") and (run_dir / "stages" / "data" / key / "stage.json").is_file()


def _lock_waiters(lock: Path) -> int:
    """Processes blocked on ``lock``'s flock: the kernel lists them in /proc/locks as ``-> FLOCK ... MAJ:MIN:INODE``."""
    inode = lock.stat().st_ino
    entries = Path("/proc/locks").read_text().splitlines()
    return sum(1 for e in entries if "->" in e and e.split()[6].rsplit(":", 1)[-1] == str(inode))


def test_a_nan_loss_exits_2_with_its_message(tmp_path: Path) -> None:
    out = invoke(build_args(tmp_path / "run", "teacher.train.lr=1.0e+30", until="teacher"), in_subprocess=True)
    assert out.exit_code == EXIT_INPUT, out.text
    assert "error: teacher: loss is nan at step 1; lower the lr in the recipe" in out.stderr
    assert not list((tmp_path / "run" / "stages" / "teacher").glob("*/stage.json"))


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_a_machine_fault_is_named_and_has_its_own_exit_code(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root (as CI runs) chmod cannot make a folder read-only: the file system's answer is injected instead."""
    import factory.files

    monkeypatch.chdir(tmp_path)

    def refuse(*args: object, dir: str = "", **kwargs: object) -> tuple[int, str]:  # noqa: A002 - mkstemp's name
        raise OSError(code, os.strerror(code), dir)

    monkeypatch.setattr(factory.files.tempfile, "mkstemp", refuse)
    out = invoke(build_args(tmp_path / "run"))
    verb = "access" if code == errno.EACCES else "write"
    assert out.exit_code == EXIT_MACHINE, out.text
    assert f"error: cannot {verb} {tmp_path / 'run'}" in out.stderr and "finished stages are cached" in out.stderr
    assert not list((tmp_path / "run" / "stages").glob("*/*/stage.json"))


def test_a_writer_that_hides_a_full_disk_is_reported_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from factory import files

    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 0))
    with pytest.raises(OSError) as err, files.atomic_path(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
