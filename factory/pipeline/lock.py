"""One build per run directory: an advisory ``flock`` on ``<run_dir>/.build.lock``.

The kernel drops a ``flock`` when its holder exits, killed or not, so there is no stale lock to clean up after a
crash. The holder writes its pid into the file so a refused build can say who is building.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_FILE = ".build.lock"


class RunDirBusy(RuntimeError):
    """Another process holds the run directory's lock."""

    def __init__(self, run_dir: Path, holder: str) -> None:
        super().__init__(
            f"{run_dir} is being built by {holder}; wait for it (or pass --wait to queue behind it), "
            "or give this build another run_dir"
        )
        self.run_dir, self.holder = run_dir, holder


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "another process (which has not written its pid yet)"


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, wait: bool = False, echo: Callable[[str], None] = print) -> Iterator[None]:
    """Hold ``run_dir``'s build lock for the ``with`` block.

    Args:
        run_dir: the run directory (created if missing).
        wait: block until the holder finishes instead of raising.
        echo: where the "waiting for ..." line goes.

    Raises:
        RunDirBusy: another process holds the lock and ``wait`` is false.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            if not wait:
                raise RunDirBusy(run_dir, holder) from None
            echo(f"waiting for {holder} to finish with {run_dir} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race with the next opener)
