"""Deployment targets: target files, bundles, the on-target runner in torch-free environments, transports, reports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from test_runtime import CONTRACT, write_tiny_onnx

from factory.data.benchmark import PairBenchmark
from factory.deploy.bundle import ENGINE_SCRIPT, BundleError, Shipped, write_bundle
from factory.deploy.report import ReportRefused, check_report, target_rows
from factory.deploy.runtime_env import isolated_python
from factory.deploy.transports import TransportError, run_on_target
from factory.files import read_json, sha256_file, write_json
from factory.recipe import RecipeError, load_recipe
from factory.recipe.loader import load_target
from factory.recipe.targets import TARGETS_DIR, TargetConfig, TransportConfig, known_targets
from factory.runtime.artifacts import Artifact
from factory.runtime.target_runner import BUNDLE_FILE, REPORT_FILE, run_bundle
from factory.runtime.tensorrt import tensorrt_available

ROOT = Path(__file__).resolve().parents[1]
RELEASE = {"name": "tiny", "version": "0.0.1"}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> list[Shipped]:
    """An ONNX FP32 model, the same as an OpenVINO IR, and a reference (teacher) that no target may ever get."""
    import openvino as ov

    root = tmp_path_factory.mktemp("build")
    write_tiny_onnx(root / "model.onnx", CONTRACT)
    ov.save_model(ov.convert_model(str(root / "model.onnx")), str(root / "model.xml"))
    contract = CONTRACT.to_dict()
    return [
        Shipped(Artifact("onnx_fp32", ("model.onnx",), "onnxruntime", golden_min_cosine=0.9999), root),
        Shipped(
            Artifact(
                "openvino_fp32",
                ("model.xml", "model.bin"),
                "openvino",
                derived_from="onnx_fp32",
                golden_min_cosine=0.9999,
                options={"precision": "f32"},
                contract=contract,
            ),
            root,
        ),
        Shipped(Artifact("teacher", ("model.onnx",), "onnxruntime", reference=True), root),
    ]


@pytest.fixture(scope="module")
def bench() -> PairBenchmark:
    rng = np.random.default_rng(0)
    pairs = 24
    images = rng.integers(0, 256, size=(2 * pairs, 3, *CONTRACT.input_size), dtype=np.uint8)
    issame = np.tile([True, False], pairs // 2)
    groups = np.repeat([0, 1], pairs // 2)
    subjects = np.arange(2 * pairs)
    return PairBenchmark(images, issame, groups, subjects, ["north", "south"])


def local_target(runtime: str, **changes: object) -> TargetConfig:
    """A local target of ``runtime`` with few repeats (the mechanism is tested, not the speed)."""
    settings = {
        "name": f"test-{runtime}",
        "runtime": runtime,
        "precisions": ["fp32"],
        "latency_warmup": 1,
        "latency_repeats": 3,
        "benchmark_app_seconds": 1.0,
        "benchmark_pairs_per_group": 6,
        "transport": TransportConfig(timeout_s=300),
    }
    return TargetConfig(**(settings | changes))


def test_the_factory_targets_load_and_name_themselves() -> None:
    names = known_targets()
    assert {"local-cpu-openvino", "local-cpu-onnxruntime", "x86-gpu-tensorrt", "jetson-orin-tensorrt"} <= set(names)
    assert "android-arm64-onnxruntime" in names
    for name in names:
        target = load_target(TARGETS_DIR / f"{name}.yaml")
        assert target.name == name
    assert load_target(TARGETS_DIR / "jetson-orin-tensorrt.yaml").engine_build == "on_target"


def test_check_refuses_unknown_runtimes_and_precisions_in_the_target_file(tmp_path: Path) -> None:
    (tmp_path / "phone.yaml").write_text("runtime: tflite\nprecisions: [fp32]\n")
    (tmp_path / "gpu.yaml").write_text("runtime: openvino\nprecisions:\n  - fp32\n  - int4\n")
    (tmp_path / "recipe.yaml").write_text(
        f"extends: {ROOT / 'recipes/tinyfar_synthdistill.yaml'}\n"
        "deploy:\n  targets: [phone.yaml, gpu.yaml, local-cpu-openvin]\n"
    )
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path / "recipe.yaml")
    text = str(err.value)
    assert f"{tmp_path / 'phone.yaml'}:1: runtime: unknown runtime 'tflite'" in text
    assert f"{tmp_path / 'gpu.yaml'}:4: precisions.1: got 'int4'" in text
    assert "recipe.yaml:3: deploy.targets.2:" in text and "did you mean 'local-cpu-openvino'?" in text


def test_a_target_file_with_settings_that_do_not_go_together_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("runtime: tensorrt\nprecisions: [fp16]\nbatch_sizes: [8]\n")
    with pytest.raises(RecipeError) as err:
        load_target(tmp_path / "t.yaml")
    text = str(err.value)
    assert f"{tmp_path / 't.yaml'}:3: batch_sizes: got [8] (expected distinct batch sizes >= 1, including 1)" in text
    assert "engine_build: 'none' for a TensorRT target (expected on_target" in text
    (tmp_path / "t.yaml").write_text("runtime: onnxruntime\ntransport:\n  kind: ssh\n  python: python3\n")
    with pytest.raises(RecipeError, match=r"t.yaml:2: transport.host: empty \(expected the target's host"):
        load_target(tmp_path / "t.yaml")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_runner_measures_the_bundle_in_an_environment_without_torch(
    runtime: str, shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    target = local_target(runtime)
    bundle = write_bundle(tmp_path / "bundle", target, shipped, bench, RELEASE, flip=True, batch_size=8)
    assert [a["artifact"]["name"] for a in bundle["artifacts"]] == [
        f"{'onnx' if runtime == 'onnxruntime' else 'openvino'}_fp32"
    ]
    # Only the runtime layer is vendored: nothing that needs torch travels with the bundle.
    vendored = sorted(
        p.relative_to(tmp_path / "bundle").as_posix() for p in (tmp_path / "bundle/factory").rglob("*.py")
    )
    assert "factory/runtime/target_runner.py" in vendored and not any("models" in v or "export" in v for v in vendored)
    report = run_on_target(target, tmp_path / "bundle", echo=lambda line: None)
    assert report["environment"]["torch_importable"] is False
    assert report["environment"][runtime]
    check_report(report, tmp_path / "bundle", bundle)
    rows = target_rows(target, tmp_path / "bundle", bundle, report)
    assert [r["gate"] for r in rows] == ["golden cosine on target", "group accuracy change vs build"]
    assert all(r["passed"] for r in rows), rows
    (measured,) = report["artifacts"].values()
    assert measured["golden_cosine"] > 0.9999
    assert len(measured["similarities"]) == 12 and set(measured["accuracy"]) == {"north", "south"}
    assert measured["latency_by_batch"]["1"]["repeats"] == 3
    if runtime == "openvino":  # benchmark_app came with openvino into the bare environment and timed the same IR
        app = measured["benchmark_app"]["1"]
        assert "error" not in app, app
        assert "-data_shape" in app["command"]
        # This model runs in microseconds, which benchmark_app prints as "us": read in ms, the two medians of the
        # same IR are within a factor of a few (a unit slip would be a factor of 1000).
        ours = measured["latency_by_batch"]["1"]["median_ms"]
        assert 1 / 20 < app["median_ms"] / ours < 20, (app["median_ms"], ours)


def test_a_bundle_named_relative_to_the_working_directory_runs(
    shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo's run directory is relative (runs/NAME); the runner starts inside its bundle and must still find it.
    target = local_target("onnxruntime")
    write_bundle(tmp_path / "bundle", target, shipped, bench, RELEASE)
    monkeypatch.chdir(tmp_path)
    report = run_on_target(target, Path("bundle"), echo=lambda line: None)
    assert report["environment"]["onnxruntime"] and (tmp_path / "bundle" / REPORT_FILE).is_file()


def test_the_same_build_and_target_give_the_same_bundle(
    shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    target = local_target("onnxruntime")
    write_bundle(tmp_path / "a", target, shipped, bench, RELEASE)
    write_bundle(tmp_path / "b", target, shipped, bench, RELEASE)
    assert sha256_file(tmp_path / "a" / BUNDLE_FILE) == sha256_file(tmp_path / "b" / BUNDLE_FILE)


def test_a_tampered_file_is_never_run_and_its_report_is_refused(
    shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    target = local_target("onnxruntime")
    folder = tmp_path / "bundle"
    bundle = write_bundle(folder, target, shipped, bench, RELEASE)
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    report = run_bundle(folder, echo=lambda line: None)
    assert report["artifacts"]["onnx_fp32"]["error"].startswith("not run: model.onnx")
    assert not next(c for c in report["checks"] if c["check"] == "sha256 model.onnx")["passed"]
    with pytest.raises(ReportRefused, match=r"model.onnx \(hash differs or missing\)"):
        check_report(report, folder, bundle)


def test_a_report_of_another_bundle_or_target_is_refused(
    shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    target = local_target("onnxruntime")
    first = write_bundle(tmp_path / "first", target, shipped, bench, RELEASE)
    report = run_bundle(tmp_path / "first", echo=lambda line: None)
    check_report(report, tmp_path / "first", first)
    other = write_bundle(tmp_path / "other", target, shipped, bench, {"name": "tiny", "version": "0.0.2"})
    with pytest.raises(ReportRefused, match="not from this release's bundle"):
        check_report(report, tmp_path / "other", other)
    with pytest.raises(ReportRefused, match="for target 'elsewhere'"):
        check_report(report | {"target": "elsewhere"}, tmp_path / "first", first)
    with pytest.raises(ReportRefused, match="not a target report"):
        check_report({"format": "something/1"}, tmp_path / "first", first)


def test_a_target_asking_for_what_the_build_does_not_ship_is_refused(
    shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match="asks for ort_mobile_fp32, which this build does not ship"):
        write_bundle(
            tmp_path / "b", local_target("onnxruntime", artifacts=["ort_mobile_fp32"]), shipped, bench, RELEASE
        )
    with pytest.raises(BundleError, match="runs openvino at int8; this build ships"):
        write_bundle(tmp_path / "b", local_target("openvino", precisions=["int8"]), shipped, bench, RELEASE)


def test_a_tensorrt_bundle_ships_onnx_its_engine_builds_and_the_trtexec_line(
    shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    target = TargetConfig(
        name="gpu", runtime="tensorrt", precisions=["fp16"], device="cuda:0", batch_sizes=[1, 8],
        engine_build="on_target", workspace_mb=512, benchmark_pairs_per_group=6,
        transport=TransportConfig(kind="manual", python="python3"),
    )  # fmt: skip
    bundle = write_bundle(tmp_path / "gpu", target, shipped, bench, RELEASE)
    (spec,) = bundle["engines"]
    assert spec["onnx"] == "model.onnx" and spec["engine"] == "student_fp16.engine"
    line = "trtexec --onnx=model.onnx --saveEngine=student_fp16.engine --minShapes=input:1x3x112x112"
    assert line in (tmp_path / "gpu" / ENGINE_SCRIPT).read_text()
    assert "--maxShapes=input:8x3x112x112 --memPoolSize=workspace:512M --fp16" in " ".join(spec["trtexec"])
    (record,) = bundle["artifacts"]
    assert record["artifact"]["runtime"] == "tensorrt" and record["artifact"]["derived_from"] == "onnx_fp32"
    with pytest.raises(BundleError, match=r"builds a int8 engine from a Q/DQ INT8 ONNX"):
        write_bundle(
            tmp_path / "int8", TargetConfig(**{**target.__dict__, "precisions": ["int8"]}), shipped, bench, RELEASE
        )


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here: the engine builds instead")
def test_without_tensorrt_the_engine_build_fails_its_gate_with_how_to_install(
    shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    target = TargetConfig(
        name="gpu", runtime="tensorrt", precisions=["fp16"], engine_build="on_target", benchmark_pairs_per_group=6,
        transport=TransportConfig(kind="manual", python="python3"),
    )  # fmt: skip
    bundle = write_bundle(tmp_path / "gpu", target, shipped, bench, RELEASE)
    report = run_bundle(tmp_path / "gpu", echo=lambda line: None)
    check_report(report, tmp_path / "gpu", bundle)
    rows = {r["gate"]: r for r in target_rows(target, tmp_path / "gpu", bundle, report)}
    assert not rows["engine built on target"]["passed"]
    assert "pip install tensorrt" in rows["engine built on target"]["detail"]
    assert not rows["ran on target"]["passed"]


@pytest.mark.tensorrt
@pytest.mark.skipif(not tensorrt_available(), reason="needs the TensorRT Python package and an NVIDIA GPU")
def test_the_runner_builds_and_runs_tensorrt_engines(
    shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    target = TargetConfig(
        name="gpu", runtime="tensorrt", precisions=["fp32", "fp16"], engine_build="on_target",
        benchmark_pairs_per_group=6, latency_repeats=3, transport=TransportConfig(kind="manual", python="python3"),
    )  # fmt: skip
    bundle = write_bundle(tmp_path / "gpu", target, shipped, bench, RELEASE)
    report = run_bundle(tmp_path / "gpu", echo=print)
    check_report(report, tmp_path / "gpu", bundle)
    assert all(r["passed"] for r in target_rows(target, tmp_path / "gpu", bundle, report))


def test_a_manual_target_says_how_to_bring_its_report(
    shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    target = local_target("onnxruntime", transport=TransportConfig(kind="manual", python="python3"))
    write_bundle(tmp_path / "b", target, shipped, bench, RELEASE)
    with pytest.raises(TransportError, match=r"run `python run_target.py` there, then `factory deploy validate"):
        run_on_target(target, tmp_path / "b", echo=lambda line: None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh_target(port: int, **transport: object) -> TargetConfig:
    settings = {"kind": "ssh", "host": "127.0.0.1", "port": port, "python": "python3", "connect_timeout_s": 2.0}
    return local_target("onnxruntime", transport=TransportConfig(**(settings | transport)))


def test_an_unreachable_host_is_named(shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client on this machine")
    port = _free_port()  # nothing listens there
    target = ssh_target(port)
    write_bundle(tmp_path / "b", target, shipped, bench, RELEASE)
    with pytest.raises(TransportError, match=rf"target test-onnxruntime \(127.0.0.1:{port}\): unreachable or refused"):
        run_on_target(target, tmp_path / "b", echo=lambda line: None)


def test_a_host_that_never_answers_times_out_by_name(
    shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client on this machine")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection and never sends ssh's banner
    try:
        target = ssh_target(silent.getsockname()[1], connect_timeout_s=1.0, timeout_s=3.0)
        write_bundle(tmp_path / "b", target, shipped, bench, RELEASE)
        started = time.monotonic()
        with pytest.raises(TransportError, match="no answer within 3 s|unreachable or refused"):
            run_on_target(target, tmp_path / "b", echo=lambda line: None)
        assert time.monotonic() - started < 30
    finally:
        silent.close()


@pytest.fixture
def sshd(tmp_path: Path) -> dict[str, object]:
    """An sshd on 127.0.0.1 for this test only: its own host key, the test's client key, no password logins."""
    daemon = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if daemon is None or shutil.which("ssh-keygen") is None:
        pytest.skip("sshd cannot be installed here (make test installs openssh-server where apt-get works as root)")
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    shutil.copyfile(keys / "client.pub", keys / "authorized_keys")
    os.chmod(keys / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    port = _free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\n"
        f"PidFile {keys / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n"
    )
    process = subprocess.Popen([daemon, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if process.poll() is not None:
            pytest.fail(f"sshd did not start: {process.stderr.read().decode()}")
        time.sleep(0.1)
    try:
        yield {"port": port, "identity": str(keys / "client"), "known_hosts": str(keys / "known_hosts")}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_ssh_transport_copies_runs_and_brings_back_the_report(
    sshd: dict[str, object], shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path
) -> None:
    python = isolated_python("onnxruntime", tmp_path / "envs")  # the "device": numpy and onnxruntime only
    target = ssh_target(
        sshd["port"],
        identity=sshd["identity"],
        known_hosts=sshd["known_hosts"],
        python=str(python),
        workspace=str(tmp_path / "remote"),
        timeout_s=300.0,
    )
    bundle = write_bundle(tmp_path / "b", target, shipped, bench, RELEASE)
    report = run_on_target(target, tmp_path / "b", echo=lambda line: None)
    check_report(report, tmp_path / "b", bundle)
    assert all(r["passed"] for r in target_rows(target, tmp_path / "b", bundle, report))
    assert (tmp_path / "remote" / target.name / "report.json").is_file()  # it ran in the workspace, not here
    assert not (tmp_path / "b" / "report.json").exists()
    assert report["environment"]["torch_importable"] is False


def test_the_runner_script_exit_codes(shipped: list[Shipped], bench: PairBenchmark, tmp_path: Path) -> None:
    python = isolated_python("onnxruntime", tmp_path / "envs")
    write_bundle(tmp_path / "b", local_target("onnxruntime"), shipped, bench, RELEASE)
    done = subprocess.run([str(python), str(tmp_path / "b/run_target.py")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_json(tmp_path / "b/report.json")["target"] == "test-onnxruntime"
    write_json(tmp_path / "b" / BUNDLE_FILE, {"format": "other/1"})
    done = subprocess.run([str(python), str(tmp_path / "b/run_target.py")], capture_output=True, text=True)
    assert done.returncode == 2 and "expected 'factory.target-bundle/1'" in done.stderr
    json.loads((tmp_path / "b/report.json").read_text())  # the earlier report is still whole
