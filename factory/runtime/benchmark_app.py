"""OpenVINO's own ``benchmark_app`` on an IR: the cross-check of the factory's latency figures.

``benchmark_app`` ships with the ``openvino`` wheel. It is run with the settings the factory's OpenVINO runner uses
(the synchronous API, one stream, the runner's thread count and inference precision, a fixed batch), and its median
is set beside the factory's own (:func:`factory.runtime.latency.time_runner`): the two should agree within
:data:`AGREEMENT` when both time the same thing, the model.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

AGREEMENT = 0.10  # the export issue's bound on |factory / benchmark_app - 1|


class BenchmarkAppUnavailable(RuntimeError):
    """``benchmark_app`` is not installed beside this interpreter nor on ``PATH``."""


@dataclass(frozen=True)
class BenchmarkAppResult:
    """``benchmark_app``'s median latency and throughput for one IR at one batch size, and the command run."""

    median_ms: float
    throughput_per_s: float
    batch: int
    threads: int
    command: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def find_benchmark_app() -> Path:
    """The ``benchmark_app`` of this interpreter's environment (the ``openvino`` wheel's), else the one on PATH."""
    beside = Path(sys.executable).with_name("benchmark_app")
    found = beside if beside.is_file() else shutil.which("benchmark_app")
    if not found:
        raise BenchmarkAppUnavailable(
            f"benchmark_app not found beside {sys.executable} nor on PATH (it comes with the openvino package)"
        )
    return Path(found)


def run_benchmark_app(
    xml: str | Path,
    batch: int,
    input_size: tuple[int, int],
    threads: int = 1,
    precision: str = "f32",
    seconds: float = 5.0,
    device: str = "CPU",
) -> BenchmarkAppResult:
    """Time ``xml`` with ``benchmark_app`` (sync API, one stream) for ``seconds``; its median and throughput."""
    height, width = input_size
    command = [str(find_benchmark_app()), "-m", str(xml), "-d", device, "-api", "sync", "-hint", "none"]
    command += ["-nstreams", "1", "-nthreads", str(threads), "-t", f"{max(int(round(seconds)), 1)}"]
    # The batch axis stays dynamic, as the factory's runner compiles every IR (a static one ran about 10 % faster
    # here), and only the data fed has the batch: the two time the same compiled graph.
    command += ["-shape", f"[?,3,{height},{width}]", "-data_shape", f"[{batch},3,{height},{width}]"]
    if precision != "default":
        command += ["-infer_precision", precision]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 300)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"benchmark_app on {xml} did not finish within {seconds + 300:.0f} s") from None
    # benchmark_app prints sub-millisecond latencies in microseconds ("Median: 25.69 us")
    median = re.search(r"Median:\s+([\d.]+) (ms|us)", done.stdout)
    throughput = re.search(r"Throughput:\s+([\d.]+) FPS", done.stdout)
    if done.returncode != 0 or not median or not throughput:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"benchmark_app on {xml} failed (exit {done.returncode}): " + " / ".join(tail))
    median_ms = float(median[1]) / (1000.0 if median[2] == "us" else 1.0)
    return BenchmarkAppResult(median_ms, float(throughput[1]), batch, threads, command)


def difference(ours_ms: float, theirs_ms: float) -> float:
    """Relative difference of the factory's median from ``benchmark_app``'s: ``ours / theirs - 1``."""
    return ours_ms / theirs_ms - 1.0
