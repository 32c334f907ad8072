"""End to end: the shipped demo recipe, shrunk with --set, through every stage to a verified release.

Also: a second build is fully cached, a changed stage re-runs only what depends on it, a failed gate writes no
release, and a build killed in the middle of distillation resumes from its checkpoint.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from helpers import DEMO_RECIPE, ROOT, TINY_BUILD, procedural_bin

from factory.cli import main
from factory.files import sha256_file

RECIPE, TINY = DEMO_RECIPE, TINY_BUILD
STAGES = ["data", "teacher", "distill", "export", "compress", "validate", "deploy", "release"]
TARGETS = {
    "local-cpu-openvino": ["openvino_fp32", "openvino_int8"],
    "local-cpu-onnxruntime": ["onnx_fp32", "onnx_int8"],
}
RELEASE_FILES = {
    "MODEL_CARD.md",
    "benchmark_labels.npz",
    "pair_distances.npz",
    "manifest.sig",
    "targets",
    "fairness.png",
    "golden_input.npy",
    "golden_input.png",
    "fmr_heatmap.png",
    "ledger.png",
    "manifest.json",
    "recipe.resolved.yaml",
    "report.md",
    "student.onnx",
    "student_fp32.bin",
    "student_fp32.xml",
    "student_int8.bin",
    "student_int8.onnx",
    "student_int8.xml",
}


def build(run_dir: Path, *extra: str) -> tuple[int, list[str]]:
    """``factory build`` in a fresh process, as a user runs it (stdout lines, then stderr lines).

    A fresh process matters for the cache: OpenVINO names unnamed nodes from a process-wide counter, so an IR
    converted after other OpenVINO work in the same process differs in those names (not in its weights or graph).
    """
    cmd = [sys.executable, "-m", "factory", "build", str(RECIPE), "--no-progress", "--set", f"run_dir={run_dir}"]
    for item in (*TINY, f"release.signing_key={SIGNING_KEY}", *extra):
        cmd += ["--set", item]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    return out.returncode, out.stdout.splitlines() + out.stderr.splitlines()


def stage_states(lines: list[str]) -> dict[str, str]:
    states = {}
    for line in lines:
        if line.startswith("[") and "/" in line.split()[0]:
            name, state = line.split()[1:3]
            states[name] = "cached" if state == "cached" else "ran"
    return states


# A throwaway key pair committed for the tests (tests/fixtures/signing): every build here signs its release, so
# a rebuild with the same settings is cached.
SIGNING_KEY = ROOT / "tests" / "fixtures" / "signing" / "test_release.pem"
PUBLIC_KEY = ROOT / "tests" / "fixtures" / "signing" / "test_release.pub.pem"


@pytest.fixture(scope="module")
def first_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, list[str]]:
    run_dir = tmp_path_factory.mktemp("tiny")
    code, lines = build(run_dir)
    return run_dir, code, lines


def test_build_releases_exactly_the_bundle(first_build: tuple[Path, int, list[str]]) -> None:
    run_dir, code, lines = first_build
    assert code == 0, "\n".join(lines)
    assert stage_states(lines) == {name: "ran" for name in STAGES}
    release = run_dir / "release"
    gate_row = next(i for i, line in enumerate(lines) if "INT8 drop vs FP32" in line)
    assert lines.index(str(release.resolve())) > gate_row  # the release directory comes after the gate table
    assert release.resolve().name == "tinyfar_synthdistill-0.1.0"  # the versioned bundle directory
    shipped = {p.name for p in release.iterdir()}
    assert shipped == RELEASE_FILES
    manifest = json.loads((release / "manifest.json").read_text())
    top = {f for f in manifest["files"] if "/" not in f}
    assert top == RELEASE_FILES - {"manifest.json", "manifest.sig", "targets"}
    # each target's runner bundle, as it ran there, with every file listed
    for target in TARGETS:
        bundle = {f.split("/", 2)[2] for f in manifest["files"] if f.startswith(f"targets/{target}/")}
        assert {"run_target.py", "bundle.json", "factory/runtime/verify.py"} <= bundle
        assert manifest["targets"][target]["bundle"] == f"targets/{target}"
    # the manifest's own hash and the tarball are printed before the release directory, and the tarball holds
    # exactly the bundle's files
    digest = next(line.split()[2] for line in lines if line.startswith("manifest sha256 "))
    assert digest == sha256_file(release / "manifest.json") and any(line.endswith("(signed)") for line in lines)
    tarball = release.resolve().parent / "tinyfar_synthdistill-0.1.0.tar.gz"
    assert any(line.startswith(f"tarball {tarball} (sha256 ") for line in lines)
    with tarfile.open(tarball) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    assert members == {*manifest["files"], "manifest.json", "manifest.sig"}
    assert manifest["signature"]["algorithm"] == "ed25519"
    assert manifest["benchmark"]["pairs"] == 160 and manifest["benchmark"]["labels"] == "benchmark_labels.npz"
    # operating thresholds per artifact and group; the tiny benchmark supports neither FMR target, and says so
    for name in ("onnx_fp32", "onnx_int8"):
        at = manifest["thresholds"]["artifacts"][name]["1e-03"]
        assert (
            not at["supported"]
            and "rule of 3" in at["unsupported"]
            and set(at["groups"]) == set(manifest["benchmark"]["groups"])
        )
    assert manifest["licences"] == {"commercial_use": False, "model_licence": "other", "inputs": {}}
    card = (release / "MODEL_CARD.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "other" and front["model-index"][0]["name"] == "tinyfar_synthdistill-0.1.0"
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", card):
        assert (release / image).is_file(), image  # the card renders with its plots
    assert {"fairness.png", "ledger.png", "fmr_heatmap.png"} <= set(re.findall(r"\(([a-z_]+\.png)\)", card))
    assert "trained and evaluated only on procedural faces" in card
    assert manifest["contract"]["input_size"] == [112, 112] and manifest["contract"]["embedding_dim"] == 512
    assert set(manifest["artifacts"]) == {"onnx_fp32", "openvino_fp32", "openvino_int8", "onnx_int8"}
    assert manifest["artifacts"]["onnx_int8"]["derived_from"] == "onnx_fp32"
    assert all(g["passed"] for g in manifest["gates"])
    assert {g["gate"] for g in manifest["gates"]} == {
        "mean accuracy",
        "accuracy STD",
        "latency ms (b1)",
        "INT8 drop vs FP32",
        "INT8 worst group drop",
        "INT8 cosine to FP32 (mean)",
        "INT8 cosine to FP32 (1st pct)",
        "golden cosine on target",
        "group accuracy change vs build",
    }
    # The main recipe's two local CPU targets ran the shipped files through their bundles' runner, each in an
    # environment without torch, and every shipped artifact of their runtime is gated there.
    on_target = {(g["artifact"], g["target"], g["gate"]) for g in manifest["gates"] if g["key"] == "deploy.targets"}
    assert on_target == {
        (name, target, gate)
        for target, names in TARGETS.items()
        for name in names
        for gate in ("golden cosine on target", "group accuracy change vs build")
    }
    for target, names in TARGETS.items():
        measured = manifest["targets"][target]
        assert measured["environment"]["torch_importable"] is False, measured["environment"]
        assert sorted(measured["artifacts"]) == sorted(names)
        for name in names:
            assert measured["artifacts"][name]["latency_by_batch"]["1"]["median_ms"] > 0
        if target == "local-cpu-openvino":  # benchmark_app ran beside the runner on the target too
            assert all("median_ms" in m["benchmark_app"]["1"] for m in measured["artifacts"].values())
    targets_section = (release / "report.md").read_text().split("## Targets")[1].split("## Gates")[0]
    for target, names in TARGETS.items():
        assert f"- {target}: " in targets_section and "torch not importable" in targets_section
        for name in names:
            assert any(row.split()[:2] == [target, name] for row in targets_section.splitlines())
    assert any(line.startswith("on the targets") for line in lines)
    ledger = manifest["fairness_ledger"]
    assert [r["stage"] for r in ledger] == [
        "teacher",
        "torch_fp32",
        "onnx_fp32",
        "openvino_fp32",
        "openvino_int8",
        "onnx_int8",
    ]
    report = (release / "report.md").read_text()
    assert "## Fairness ledger" in report
    # every INT8 artifact's drift comes with its size, its 1st-percentile cosine and the layers it moved most
    for int8 in ("openvino_int8", "onnx_int8"):
        (line,) = [x for x in report.splitlines() if x.startswith(f"- {int8} (")]
        assert " MB) vs " in line and "1st percentile" in line
    assert report.count("  - layers moved most: ") == 2
    # every shipped artifact timed at batch 1; each OpenVINO IR also by benchmark_app, with the difference
    timed = report.split("## Latency")[1].split("## Gates")[0].splitlines()
    for name in manifest["artifacts"]:
        (row,) = [x for x in timed if x.startswith(f"{name} ")]
        agreement = row.split()[-1] in ("yes", "no") if name.startswith("openvino") else row.split()[-3:] == ["-"] * 3
        assert row.split()[1] == "1" and agreement, row
    for int8 in ("openvino_int8", "onnx_int8"):
        assert len(manifest["artifacts"][int8]["metrics"]["evaluation"]["groups"]) >= 4
    assert manifest["lineage"]["recipe"]["distill"]["train"]["steps"] == 12
    # INT8 ranges came from 32 procedural faces, 8 per group, none of them a benchmark face
    (data_record,) = (run_dir / "stages" / "data").glob("*/stage.json")
    calibration = json.loads(data_record.read_text())["metrics"]["calibration"]
    assert calibration["groups"] == {"alpha": 8, "beta": 8, "gamma": 8, "delta": 8}
    assert calibration["apart_from_benchmark"]["identical_images"] == 0
    assert calibration["apart_from_benchmark"]["images_compared"] == 32
    assert manifest["lineage"]["packages"]["nncf"]
    # The gate table is printed before the release path; both INT8 artifacts are gated on their drop.
    for int8 in ("openvino_int8", "onnx_int8"):
        assert any(line.startswith(int8) and "INT8 drop vs FP32" in line for line in lines)


def test_release_verifies_in_plain_runtimes(first_build: tuple[Path, int, list[str]], tmp_path: Path) -> None:
    release = first_build[0] / "release"
    public = str(PUBLIC_KEY)
    digest = sha256_file(release / "manifest.json")

    def verify(folder: Path, *args: str) -> subprocess.CompletedProcess:
        script = str(ROOT / "deploy" / "verify_release.py")
        return subprocess.run([sys.executable, script, str(folder), *args], capture_output=True, text=True, timeout=300)

    out = verify(release, "--public-key", public, "--manifest-sha256", digest)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok   golden") == 4 and "ok   signature manifest.sig: valid" in out.stdout
    # Tampering is caught (on copies: the build's own release stays intact for later tests): a flipped byte in an
    # artifact, in a target's runner bundle, an added file, an edited manifest.
    copy = Path(shutil.copytree(release, tmp_path / "copy"))
    onnx = copy / "student.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    runner = copy / "targets" / "local-cpu-openvino" / "run_target.py"
    data = bytearray(runner.read_bytes())
    data[100] ^= 0x01
    runner.write_bytes(bytes(data))
    (copy / "targets" / "local-cpu-openvino" / "extra.py").write_text("print('not shipped')")
    out = verify(copy, "--public-key", public)
    assert out.returncode == 1
    assert "FAIL sha256 student.onnx: MISMATCH" in out.stdout
    assert "FAIL sha256 targets/local-cpu-openvino/run_target.py: MISMATCH" in out.stdout
    assert "FAIL unlisted targets/local-cpu-openvino/extra.py" in out.stdout
    assert "FAIL golden onnx_fp32: not run" in out.stdout and "ok   golden openvino_int8" in out.stdout
    edited = Path(shutil.copytree(release, tmp_path / "edited"))
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["gates"][0]["limit"] = 0.0
    (edited / "manifest.json").write_text(json.dumps(manifest))
    out = verify(edited, "--public-key", public, "--manifest-sha256", digest)
    assert out.returncode == 1 and "FAIL signature manifest.sig: the signature does not match" in out.stdout
    assert f"expected {digest} (edited)" in out.stdout
    # The same checks through the factory CLI.
    verified = CliRunner().invoke(main, ["release", "verify", str(release), "--public-key", public])
    assert verified.exit_code == 0 and verified.output.count("ok   golden") == 4, verified.output
    tampered = CliRunner().invoke(main, ["release", "verify", str(copy)])
    assert tampered.exit_code == 1 and "FAIL sha256 student.onnx: MISMATCH: its content differs" in tampered.output


def test_rebuild_is_cached_and_changes_rerun_only_downstream(first_build: tuple[Path, int, list[str]]) -> None:
    run_dir = first_build[0]
    code, lines = build(run_dir)
    assert code == 0 and stage_states(lines) == {name: "cached" for name in STAGES}
    # validate's setting: validate and what reads it re-run; deploy, which does not read it, stays cached
    code, lines = build(run_dir, "validate.latency_repeats=6")
    assert code == 0, "\n".join(lines)
    states = stage_states(lines)
    assert {k for k, v in states.items() if v == "ran"} == {"validate", "release"}


def test_a_setting_that_leaves_artifacts_identical_reruns_only_its_stage(
    first_build: tuple[Path, int, list[str]],
) -> None:
    # The parity limit is read by export alone and changes none of its files: the stages after it stay cached.
    code, lines = build(first_build[0], "export.min_parity_cosine=0.99")
    assert code == 0, "\n".join(lines)
    assert stage_states(lines) == {name: "ran" if name == "export" else "cached" for name in STAGES}


def test_force_reruns_a_stage(first_build: tuple[Path, int, list[str]]) -> None:
    run_dir = first_build[0]
    args = ["build", str(RECIPE), "--no-progress", "--set", f"run_dir={run_dir}", "--force", "data", "--until", "data"]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert stage_states(result.output.splitlines()) == {"data": "ran"}


def test_failed_gate_writes_no_release_and_keeps_the_last_good_one(first_build: tuple[Path, int, list[str]]) -> None:
    run_dir = first_build[0]
    good = (run_dir / "release").resolve()
    # a quality floor and a fairness goal no model here can reach: every group at least 99 %
    code, lines = build(run_dir, "gates.min_accuracy=0.9999", "gates.goals=[{metric: group_accuracy, threshold: 0.99}]")
    assert code == 1
    text = "\n".join(lines)
    assert "gate failed: torch_fp32 mean accuracy" in text and "(limit >= 0.9999)" in text
    # the table says why, row by row: the goal fails on every shipped artifact
    assert "gate failed: onnx_int8 worst group accuracy" in text and "(limit >= 0.99)" in text
    assert any(line.startswith("onnx_int8") and "worst group accuracy" in line and "FAIL" in line for line in lines)
    assert lines[-2:] == [
        f"no new release written; the failure is recorded in {run_dir / 'release.failed.json'}",
        f"the last good release remains: {good}",
    ]
    assert (run_dir / "release").resolve() == good
    record = json.loads((run_dir / "release.failed.json").read_text())
    assert record["recipe"]["gates"]["min_accuracy"] == 0.9999
    assert {g["gate"] for g in record["failed"]} == {"mean accuracy", "worst group accuracy"}
    assert "min_accuracy: 0.3" in (run_dir / "recipe.resolved.yaml").read_text()  # the recipe of the release
    assert not list((run_dir / "stages" / "release").glob("*.partial/manifest.json"))


def test_unknown_stage_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", str(RECIPE), "--set", f"run_dir={tmp_path}", "--force", "distil"])
    assert result.exit_code == 2
    assert "unknown stage 'distil': did you mean 'distill'?" in result.output


def test_killed_build_resumes_distillation(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "factory", "build", str(RECIPE), "--no-progress", "--until", "distill"]
    for item in [*TINY, f"run_dir={tmp_path}", "distill.train.steps=60", "distill.train.checkpoint_every=5"]:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    resume_files = tmp_path / "stages" / "distill"
    deadline = time.monotonic() + 240
    while not list(resume_files.glob("*.partial/resume.pt")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "distillation never wrote a checkpoint"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(resume_files.glob("*/stage.json")), "a killed stage must not be recorded as finished"
    # The same command again has the same stage key: it must continue from the checkpoint, not from step 0.
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    (record,) = resume_files.glob("*/stage.json")
    metrics = json.loads(record.read_text())["metrics"]
    assert metrics["resumed_from"] >= 5 and metrics["steps"] == 60
    assert not list(resume_files.glob("*.partial"))


def test_build_validates_on_a_real_verification_bin(first_build: tuple[Path, int, list[str]], tmp_path: Path) -> None:
    from factory.pipeline.build import build as run_build
    from factory.recipe import load_recipe

    procedural_bin(tmp_path / "lfw.bin", pairs=40)  # insightface format, held-out procedural identities

    # nothing here reads latency: benchmark_app's cross-check is left to the first build
    bench = [f"data.benchmark={tmp_path / 'lfw.bin'}", "validate.benchmark_app_seconds=0"]
    overrides = [f"run_dir={first_build[0]}", *TINY, *bench]
    result = run_build(load_recipe(RECIPE, overrides), until="validate")
    metrics = result.stages["validate"].metrics
    assert metrics["groups"] == ["lfw"] and metrics["pairs"] == 40
    assert result.stages["teacher"].cached and result.stages["distill"].cached  # models are reused
    assert set(metrics["artifacts"]["openvino_int8"]["evaluation"]["groups"]) == {"lfw"}
    # One group has no STD: the STD gate cannot pass unmeasured, it fails and says why.
    from factory.recipe import GatesConfig
    from factory.release.gates import evaluate_gates

    artifacts = [a for out in result.stages.values() for a in out.artifacts]
    std_rows = [r for r in evaluate_gates(GatesConfig(max_std=0.05), metrics, artifacts) if "STD" in r.gate]
    assert std_rows and all(not r.passed and r.gate == "accuracy STD (n/a)" for r in std_rows)


def test_teacher_and_distillation_train_on_files(tmp_path: Path) -> None:
    from PIL import Image

    from factory.data.world.renderer import ProceduralFaceWorld
    from factory.data.world.splits import identity_set, labelled_batch, unlabelled_batch
    from factory.pipeline.build import build as run_build
    from factory.recipe import load_recipe

    world = ProceduralFaceWorld(seed=0)
    ids = identity_set(world, "files", per_group=2, seed=0)
    images, labels, groups = labelled_batch(world, ids, 48, step=0, seed=0)
    for k, (img, label, group) in enumerate(zip(images.numpy(), labels.tolist(), groups.tolist(), strict=True)):
        folder = tmp_path / "bupt" / world.group_names[group] / f"id{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{k}.png")
    (tmp_path / "flat").mkdir()
    for k, img in enumerate(unlabelled_batch(world, 24, step=0, seed=1)["images"].numpy()):
        Image.fromarray(img.transpose(1, 2, 0)).save(tmp_path / "flat" / f"{k}.png")

    overrides = [
        f"run_dir={tmp_path / 'run'}",
        *TINY,
        "teacher.source.kind=files",
        f"teacher.source.path={tmp_path / 'bupt'}",
        "distill.source.kind=files",
        f"distill.source.path={tmp_path / 'flat'}",
    ]
    result = run_build(load_recipe(RECIPE, overrides), until="distill")
    teacher = result.stages["teacher"].metrics
    assert teacher["data"] == str(tmp_path / "bupt") and teacher["identities"] == len(set(labels.tolist()))
    assert result.stages["distill"].metrics["steps"] == 12


NEW_KINDS = ["onnx", "openvino", "openvino_fp16", "ort_mobile", "onnx_external"]
# The QAT recipe's own method, 3 steps; its two PTQ methods are the demo's, which the first build runs.
QAT_TRAIN = "{steps: 3, batch_size: 8, optimizer: sgd, nesterov: true, lr: 0.001, weight_decay: 0.0}"
QAT_SHRUNK = ["compress.methods=[{kind: qat, train: " + QAT_TRAIN + "}]"]


@pytest.fixture(scope="module")
def qat_with_new_kinds(first_build: tuple[Path, int, list[str]]) -> Any:
    """The QAT recipe, with a plugin's artifact kind and two more built-in ones among its exports: one build for both.

    Everything from export on re-runs here either way; sharing the build saves a full export-to-release pass.
    """
    import plugin_external_onnx  # noqa: F401  (registers the exporter: the only code the new kind brings)

    from factory.pipeline.build import build as run_build
    from factory.recipe import load_recipe

    # openvino_fp16 and ort_mobile are built-in kinds, along for the ride through the whole build
    formats = "export.formats=[" + ", ".join("{kind: " + k + "}" for k in NEW_KINDS) + "]"
    overrides = [f"run_dir={first_build[0]}", *TINY, *QAT_SHRUNK, formats]
    return run_build(load_recipe(ROOT / "recipes" / "tinyfar_qat.yaml", overrides), echo=lambda line: None)


def test_a_new_artifact_kind_is_validated_gated_and_released(qat_with_new_kinds: Any) -> None:
    from factory.runtime.verify import verify_release

    result = qat_with_new_kinds
    assert result.stages["distill"].cached  # the models are reused; everything from export on sees the new kind
    validation = result.stages["validate"].metrics
    assert validation["order"] == [
        "teacher",
        "torch_fp32",
        "onnx_fp32",
        "openvino_fp32",
        "openvino_fp16",
        "ort_mobile_fp32",
        "onnx_external_fp32",
        "openvino_qat_int8",
        "onnx_qat_int8",
    ]
    gates = {(g["artifact"], g["target"], g["gate"]) for g in result.stages["release"].metrics["gates"]}
    assert {("onnx_external_fp32", "", "mean accuracy"), ("onnx_external_fp32", "", "latency ms (b1)")} <= gates
    assert {("openvino_fp16", "", "mean accuracy"), ("openvino_fp16", "", "latency ms (b1)")} <= gates
    # each goes to the targets of its runtime and precision: the IR to OpenVINO, the two-file ONNX to ONNX Runtime
    assert ("openvino_fp16", "local-cpu-openvino", "golden cosine on target") in gates
    assert ("onnx_external_fp32", "local-cpu-onnxruntime", "golden cosine on target") in gates
    manifest = json.loads((result.release_dir / "manifest.json").read_text())
    assert manifest["artifacts"]["openvino_fp16"]["precision"] == "fp16"
    assert (result.release_dir / "student_fp16.bin").is_file()
    assert "openvino_fp16" in {row["stage"] for row in manifest["fairness_ledger"]}
    checks = verify_release(result.release_dir)
    assert all(c.passed for c in checks), [c.message for c in checks if not c.passed]
    assert any(c.message.startswith("golden openvino_fp16: cosine") for c in checks)
    assert any(c.message.startswith("golden onnx_external_fp32: cosine") for c in checks)
    assert {"student_external.onnx", "student_external.onnx.data"} <= set(manifest["files"])
    assert any(c.message.startswith("golden ort_mobile_fp32: cosine") for c in checks)
    assert {"student.ort", "student.required_operators.config"} <= set(manifest["files"])


def test_qat_recipe_releases_quantization_aware_artifacts(qat_with_new_kinds: Any) -> None:
    result = qat_with_new_kinds
    assert result.stages["distill"].cached  # QAT starts from the distilled student; only compress on re-runs
    methods = result.stages["compress"].metrics["methods"]
    assert methods["openvino_qat_int8"]["qat"]["steps"] == 3 == methods["onnx_qat_int8"]["qat"]["steps"]
    validation = result.stages["validate"].metrics
    assert {"openvino_qat_int8", "onnx_qat_int8"} <= set(validation["order"])
    assert validation["comparisons"]["onnx_qat_int8"]["against"] == "torch_fp32"  # paired with its FP32 parent
    gates = {(g["artifact"], g["gate"]) for g in result.stages["release"].metrics["gates"]}
    assert {("openvino_qat_int8", "INT8 drop vs FP32"), ("onnx_qat_int8", "INT8 cosine to FP32 (mean)")} <= gates
    manifest = json.loads((result.release_dir / "manifest.json").read_text())
    assert manifest["artifacts"]["onnx_qat_int8"]["derived_from"] == "torch_fp32"
    assert (result.release_dir / "student_qat_int8.onnx").is_file()


SHRUNK = {
    "mobilefacenet_qud": ["distill.train.milestones=[4, 8, 10]"],  # inside 12 steps
    # 8 "real" identities of 2 images: rendered in a moment, and drawn again and again in 12 steps
    "mixed_70_30_kd": ["distill.source.real.identities_per_group=2", "distill.source.real.images_per_identity=2"],
    # Four teachers of 4 steps each (the demo's one has 12), a 4-step adaptor, milestones inside 12 steps; batches
    # of 8, as every step runs four teachers.
    "mst_kd": [
        "teacher.train.steps=4",
        "teacher.train.batch_size=8",
        "distill.train.batch_size=8",
        "distill.train.milestones=[4, 8, 10]",
        "distill.method.adaptor_steps=4",
        "distill.method.identities_per_group=4",
    ],
}
MST_TEACHERS = ["teacher_alpha", "teacher_beta", "teacher_gamma", "teacher_delta"]


def small_recipe(name: str, run_dir: Path, extra: list[str] | None = None) -> Any:
    from factory.recipe import load_recipe

    overrides = [f"run_dir={run_dir}", *TINY, *SHRUNK.get(name, []), *(extra or [])]
    return load_recipe(ROOT / "recipes" / f"{name}.yaml", overrides)


@pytest.mark.parametrize("name", ["mobilefacenet_qud", "margin_baseline", "mixed_70_30_kd", "mst_kd"])
def test_every_small_recipe_distills(first_build: tuple[Path, int, list[str]], name: str) -> None:
    from factory.pipeline.build import build as run_build

    result = run_build(small_recipe(name, first_build[0]), until="distill", echo=lambda line: None)
    # The same world and teacher as the demo's tiny build; MST-KD trains its own four.
    assert result.stages["teacher"].cached == (name != "mst_kd")
    distill = result.stages["distill"].metrics
    assert distill["steps"] == 12 and math.isfinite(distill["final"]["loss"])
    expected = {
        "mobilefacenet_qud": "QUD (InfoNCE, tau 0.1, queue 1024)",
        "margin_baseline": "margin baseline",
        "mixed_70_30_kd": "feature KD",
        "mst_kd": "MST-KD (EAF-KD, SL adaptor, lambda 10000)",
    }
    assert distill["method"].startswith(expected[name])
    if name == "mixed_70_30_kd":  # 16 faces a step: 11 real (70 %, largest remainder) and 5 synthetic
        assert distill["data"].startswith("real_synthetic 70/30 per group: real procedural_set:distill-set")
        composition = distill["composition"]
        assert (composition["real"], composition["synthetic"]) == (12 * 11, 12 * 5)
        assert all(abs(g["real_share"] - 0.7) < 0.1 for g in composition["groups"].values())
        cache = distill["teacher_cache"]  # 8 identities x 2 images x 2 flips: at most 32 teacher embeddings
        assert cache["computed"] <= 32 and cache["hits"] == 12 * 11 - cache["computed"] and cache["unkeyed"] == 60
    if name == "mst_kd":
        assert result.stages["teacher"].metrics["teachers"] == distill["teachers"] == MST_TEACHERS
        assert distill["adaptor"]["steps"] == 4 and math.isfinite(distill["adaptor"]["final"]["loss"])


def test_mst_kd_release_measures_every_teacher(first_build: tuple[Path, int, list[str]]) -> None:
    from factory.pipeline.build import build as run_build

    # One runtime is enough to see the teachers measured and never shipped: ONNX and its INT8, one target.
    onnx_only = [
        "export.formats=[{kind: onnx}]",
        "compress.methods=[{kind: onnx_ptq}]",
        f"deploy.targets=[{ROOT / 'tests' / 'targets' / 'local-cpu-onnxruntime.yaml'}]",
    ]
    recipe = small_recipe("mst_kd", first_build[0], onnx_only)
    result = run_build(recipe, echo=lambda line: None)
    validation = result.stages["validate"].metrics
    students = ["torch_fp32", "onnx_fp32", "onnx_int8"]
    assert validation["order"] == [*MST_TEACHERS, *students] and validation["references"] == MST_TEACHERS
    # Each specialist measured per group; the student paired with the first teacher, its recorded parent.
    assert all(
        set(validation["artifacts"][t]["evaluation"]["groups"]) == set(validation["groups"]) for t in MST_TEACHERS
    )
    assert validation["comparisons"]["torch_fp32"]["against"] == "teacher_alpha"
    assert not any("latency" in validation["artifacts"][t] for t in MST_TEACHERS)  # references are not timed
    gates = result.stages["release"].metrics["gates"]
    # teachers are never gated, here or on the targets (which get the shipped artifacts only)
    assert {g["artifact"] for g in gates if g["key"] != "deploy.targets"} == set(students)
    assert {g["artifact"] for g in gates if g["key"] == "deploy.targets"} == set(students) - {"torch_fp32"}
    manifest = json.loads((result.release_dir / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == {"onnx_fp32", "onnx_int8"}
    assert manifest["artifacts"]["onnx_int8"]["derived_from"] == "onnx_fp32"
    assert set(manifest["reference"]) == {*MST_TEACHERS, "torch_fp32"}
    assert [r["stage"] for r in manifest["fairness_ledger"]] == [*MST_TEACHERS, *students]
    report = (result.release_dir / "report.md").read_text()
    assert (
        "distilled from 4 `iresnet_nano` teachers (teacher_alpha, teacher_beta, teacher_gamma, teacher_delta" in report
    )
    assert "- teachers (per_group): iresnet_nano, 4 steps each: teacher_alpha on 4 identities of alpha;" in report
