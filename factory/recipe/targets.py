"""Deployment targets: one YAML file per device the release is measured on (``deploy/targets/*.yaml``).

A target names the runtime that runs the shipped files there, the precisions it takes, its threads, device and batch
sizes, how the factory reaches it (``transport``: a local subprocess, ssh, or a report produced by hand) and whether
a TensorRT engine is built on it. A recipe lists the targets its release must pass on (``deploy.targets``), by name
(a file in :data:`TARGETS_DIR`) or by path; each is read with the recipe loader, so a mistake in a target file is
reported as ``FILE:LINE: key: message`` by ``factory check`` with the recipe's own problems
(:func:`factory.recipe.loader.load_target`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from factory.recipe.schema import RUN_NAME, RUN_NAME_EXPECTED, between, matching

TARGETS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "targets"
"""The targets that come with the factory, each ``NAME.yaml``."""

# What each runtime a target can run takes. TensorRT builds its engine from the shipped ONNX on the target: FP16
# from the FP32 ONNX, INT8 from the Q/DQ ONNX (explicit quantization). ``torch`` is a build-machine runtime only.
RUNTIME_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "fp16", "int8"),
    "tensorrt": ("fp32", "fp16", "int8"),
}
Precision = Literal["fp32", "fp16", "int8"]


@dataclass
class TransportConfig:
    """How the factory reaches a target and gets its report back."""

    # local: a subprocess here; ssh: copy the bundle to `host` and run it there; manual: a report made by hand on
    # the device (`factory deploy bundle`, run it there, then `factory deploy validate --report FILE`)
    kind: Literal["local", "ssh", "manual"] = "local"
    # the interpreter that runs the bundle. Local: `isolated` (default) is a fresh environment the factory makes
    # holding only numpy and the target's runtime, so the bundle is proven self-contained; or a path/command.
    python: str = "isolated"
    host: str = ""  # ssh: host name or address
    port: int = field(default=22, metadata=between(ge=1, le=65535))
    user: str = ""  # ssh: login (default: ssh's own)
    identity: str | None = None  # ssh: private key file (default: ssh's own)
    known_hosts: str | None = None  # ssh: known-hosts file (default: ssh's own; a new host key is accepted once)
    workspace: str = "factory-deploy"  # ssh: folder on the target the bundle is copied into (relative to home)
    connect_timeout_s: float = field(default=10.0, metadata=between(gt=0, le=600))
    # the whole run on the target (copy, engine build, measurements, report)
    timeout_s: float = field(default=900.0, metadata=between(gt=0, le=86400))

    def check(self, fail: Any) -> None:
        """Ssh needs a host; the other transports take none."""
        if self.kind == "ssh" and not self.host:
            fail("host", "empty (expected the target's host name or address for transport 'ssh')")
        if self.kind != "ssh" and self.host:
            fail("host", f"set for transport {self.kind!r}, which does not use it (expected kind: ssh, or no host)")
        if self.kind == "ssh" and self.python == "isolated":
            fail(
                "python", "'isolated' is made by the factory on this machine only (expected e.g. python3 on the target)"
            )


@dataclass
class TargetConfig:
    """One device the release is measured on."""

    name: str = field(default="", metadata=matching(f"|{RUN_NAME}", RUN_NAME_EXPECTED))  # default: the file's stem
    description: str = ""
    runtime: str = field(default="onnxruntime", metadata={"registry": "runtime"})
    # the shipped artifacts of these precisions that `runtime` runs go to the target (TensorRT: engines built there)
    precisions: list[Precision] = field(default_factory=lambda: ["fp32", "int8"])
    # only these shipped artifacts (e.g. [ort_mobile_fp32] for a phone); empty: every one of runtime and precisions
    artifacts: list[str] = field(default_factory=list)
    device: str = "CPU"  # OpenVINO device name, or the GPU ("cuda:0") of a TensorRT target
    threads: int = field(default=1, metadata=between(ge=1, le=1024))
    batch_sizes: list[int] = field(default_factory=lambda: [1])  # latency is measured at each; 1 is what gates read
    latency_warmup: int = field(default=20, metadata=between(ge=0))
    latency_repeats: int = field(default=100, metadata=between(ge=1))
    # OpenVINO targets: its benchmark_app times each IR beside the runner for this many seconds (0: not run)
    benchmark_app_seconds: float = field(default=3.0, metadata=between(ge=0, le=600))
    benchmark_pairs_per_group: int = field(default=100, metadata=between(ge=1))  # benchmark faces shipped per group
    max_latency_ms: float | None = field(default=None, metadata=between(gt=0))  # batch-1 median on the target
    # largest change of any group's accuracy (at the bundle's threshold) from the build machine's on the same faces
    max_accuracy_change: float = field(default=0.02, metadata=between(ge=0, le=1))
    # TensorRT: the engine is built on the target from the shipped ONNX (engines are tied to GPU, TensorRT and OS)
    engine_build: Literal["none", "on_target"] = "none"
    workspace_mb: int = field(default=1024, metadata=between(ge=16))
    transport: TransportConfig = field(default_factory=TransportConfig)

    def check(self, fail: Any) -> None:
        """Runtime, precisions, batch sizes and engine build that go together."""
        if self.runtime not in RUNTIME_PRECISIONS:
            fail(
                "runtime", f"{self.runtime!r} runs on the build machine only (expected {', '.join(RUNTIME_PRECISIONS)})"
            )
            return
        allowed = RUNTIME_PRECISIONS[self.runtime]
        for i, precision in enumerate(self.precisions):
            if precision not in allowed:
                fail(f"precisions.{i}", f"{precision!r} is not run by {self.runtime} (expected one of {allowed})")
        if not self.precisions:
            fail("precisions", f"empty (expected some of {allowed})")
        batches = self.batch_sizes
        if 1 not in batches or min(batches) < 1 or len(set(batches)) != len(batches):
            fail("batch_sizes", f"got {batches} (expected distinct batch sizes >= 1, including 1)")
        if self.runtime == "tensorrt" and self.engine_build != "on_target":
            fail("engine_build", "'none' for a TensorRT target (expected on_target: engines are built on the target)")
        if self.runtime != "tensorrt" and self.engine_build != "none":
            fail(
                "engine_build",
                f"{self.engine_build!r} for {self.runtime} (expected none: only TensorRT builds engines)",
            )


def target_path(name: str, base: Path) -> Path:
    """The file a recipe's target entry names: ``NAME`` in :data:`TARGETS_DIR`, or a path relative to ``base``."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return (base / name).resolve()
    return TARGETS_DIR / f"{name}.yaml"


def known_targets() -> list[str]:
    """The names of the targets that come with the factory."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def target_dict(target: TargetConfig) -> dict[str, Any]:
    """JSON-ready settings of a target (what its bundle records)."""
    return dataclasses.asdict(target)
