"""How a bundle reaches its target and its report comes back: a local subprocess, ssh, or by hand.

Each transport takes the bundle folder and returns the runner's report (parsed JSON); every failure is a
:class:`TransportError` that names the target, the host and what happened (refused, timed out, the runner's last
lines), so the target's gate fails with a reason instead of hanging or passing.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from factory.deploy.runtime_env import RuntimeEnvError, isolated_python
from factory.files import read_json
from factory.recipe.targets import TargetConfig
from factory.registry import Registry
from factory.runtime.target_runner import REPORT_FILE

Transport = Callable[[TargetConfig, Path, Callable[[str], None]], dict[str, Any]]
TRANSPORTS: Registry[Transport] = Registry("transport")


class TransportError(RuntimeError):
    """The bundle could not be run on its target, or no report came back."""


def run_on_target(target: TargetConfig, bundle: Path, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``bundle`` on ``target`` through its transport; the runner's report."""
    return TRANSPORTS.get(target.transport.kind)(target, bundle, echo)


@TRANSPORTS.register("local")
def run_local(target: TargetConfig, bundle: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """A subprocess on this machine, by default in an environment holding only numpy and the target's runtime."""
    bundle = bundle.resolve()  # the runner runs inside the bundle: a path relative to here would not reach it
    report = bundle / REPORT_FILE
    report.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="factory-env-") as envs:
        if target.transport.python == "isolated":
            try:
                python = str(isolated_python(target.runtime, envs))
            except RuntimeEnvError as e:
                raise TransportError(f"target {target.name}: {e}") from None
        else:
            python = target.transport.python
        # Nothing of this process's environment points the runner at the factory or another site-packages.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        command = [python, str(bundle / "run_target.py"), "--out", str(report)]
        echo(f"{target.name}: {shlex.join(command)}")
        done = _run(command, target, f"target {target.name} (local)", cwd=bundle, env=env)
    if not report.is_file():
        raise TransportError(
            f"target {target.name}: the runner wrote no report (exit {done.returncode}): {_tail(done)}"
        )
    return read_json(report)


@TRANSPORTS.register("ssh")
def run_ssh(target: TargetConfig, bundle: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """Copy the bundle to ``host:workspace`` (tar over ssh), run it there with the target's python, read the report."""
    t = target.transport
    where = f"target {target.name} ({t.user + '@' if t.user else ''}{t.host}:{t.port})"
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(int(t.connect_timeout_s), 1)}"]
    ssh += ["-o", "StrictHostKeyChecking=accept-new", "-p", str(t.port)]
    if t.identity:
        ssh += ["-i", t.identity, "-o", "IdentitiesOnly=yes"]
    if t.known_hosts:
        ssh += ["-o", f"UserKnownHostsFile={t.known_hosts}"]
    ssh.append(f"{t.user}@{t.host}" if t.user else t.host)
    remote = f"{t.workspace.rstrip('/')}/{target.name}"
    quoted = shlex.quote(remote)
    echo(f"{where}: copying the bundle to {remote}")
    _run([*ssh, f"rm -rf {quoted} && mkdir -p {quoted}"], target, where)
    tar = subprocess.Popen(["tar", "-C", str(bundle), "-cf", "-", "."], stdout=subprocess.PIPE)
    try:
        _run([*ssh, f"tar -C {quoted} -xf -"], target, where, stdin=tar.stdout)
    finally:
        tar.stdout.close()
        tar.wait()
    echo(f"{where}: running the bundle")
    run = f"cd {quoted} && {shlex.quote(t.python)} run_target.py --out {REPORT_FILE}"
    done = _run([*ssh, run], target, where, check=False)
    fetched = _run([*ssh, f"cat {quoted}/{REPORT_FILE}"], target, where, check=False)
    if fetched.returncode != 0:
        raise TransportError(f"{where}: the runner wrote no report (exit {done.returncode}): {_tail(done)}")
    try:
        return json.loads(fetched.stdout)
    except json.JSONDecodeError as e:
        raise TransportError(f"{where}: the report is not JSON ({e})") from None


@TRANSPORTS.register("manual")
def run_manual(target: TargetConfig, bundle: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """Nothing the factory can run: the report comes from ``factory deploy validate --report FILE``."""
    raise TransportError(
        f"target {target.name} is reached by hand (transport: manual) and has no report yet: copy the bundle "
        f"({bundle}) to the device, run `python run_target.py` there, then `factory deploy validate RECIPE --target "
        f"{target.name} --report report.json`"
    )


def _run(
    command: list[str], target: TargetConfig, where: str, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess:
    timeout = target.transport.timeout_s
    try:
        done = subprocess.run(command, capture_output=True, text=kwargs.get("stdin") is None, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise TransportError(f"{where}: no answer within {timeout:g} s (transport.timeout_s)") from None
    except FileNotFoundError as e:
        raise TransportError(f"{where}: cannot run {command[0]!r} ({e.strerror})") from None
    if check and done.returncode != 0:
        if command[0] == "ssh" and done.returncode == 255:
            raise TransportError(f"{where}: unreachable or refused: {_tail(done)}")
        raise TransportError(f"{where}: {shlex.join(command[-1:])} failed (exit {done.returncode}): {_tail(done)}")
    return done


def _tail(done: subprocess.CompletedProcess) -> str:
    text = done.stderr if isinstance(done.stderr, str) else (done.stderr or b"").decode(errors="replace")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-4:]) or "(no output)"
