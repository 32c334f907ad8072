"""The release stage: when every gate passes, a self-describing bundle a deployer can verify and run.

Bundle layout::

    student.onnx                      ONNX FP32 (ONNX Runtime, TensorRT on the target)
    student_fp32.xml / .bin           OpenVINO IR FP32
    student_int8.xml / .bin           OpenVINO IR INT8 (NNCF PTQ)
    golden_input.png / .npy           one aligned face, and exactly what the models are fed for it
    recipe.resolved.yaml              the recipe after extends and overrides
    fairness.png                      per-group accuracy of every artifact
    report.md                         readable summary: accuracy and fairness table, gates, parity, lineage
    manifest.json                     sha256 of every other file, input contract, metrics, gates, golden, lineage
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from factory.data.benchmark import PairBenchmark
from factory.data.preprocess import to_model_input_numpy
from factory.evaluate.ledger import build_ledger, format_ledger
from factory.evaluate.plots import accuracy_by_stage, fmr_heatmap
from factory.evaluate.validate import accuracy_table, artifact_order
from factory.export.runtimes import onnx_runner, openvino_runner
from factory.files import atomic_path, sha256_tree, write_json, write_text
from factory.models.checkpoint import load_model
from factory.release.gates import GateResult, evaluate_gates, failure_message, format_gate_table
from factory.release.provenance import git_commit, package_versions

if TYPE_CHECKING:
    from factory.pipeline import StageContext

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "factory.release/1"
# Golden embeddings are re-checked on other machines, where kernels (and INT8 rounding) may differ slightly.
GOLDEN_MIN_COSINE = {"onnx_fp32": 0.9999, "openvino_fp32": 0.9999, "openvino_int8": 0.99}
ARTIFACT_FILES = {
    "onnx_fp32": ("export", ["student.onnx"]),
    "openvino_fp32": ("export", ["student_fp32.xml", "student_fp32.bin"]),
    "openvino_int8": ("compress", ["student_int8.xml", "student_int8.bin"]),
}


def make_release(ctx: StageContext) -> dict[str, Any]:
    """Check the gates; if all pass, write the bundle into the stage directory.

    Raises:
        GateFailure: one or more gates failed; nothing is written.
    """
    from factory.pipeline import GateFailure

    recipe = ctx.recipe
    validation = ctx.inputs["validate"].metrics
    rows = evaluate_gates(recipe.gates, validation)
    if not all(r.passed for r in rows):
        raise GateFailure(failure_message(rows), [r.to_dict() for r in rows], validation)

    out = ctx.work_dir
    for stage, names in ARTIFACT_FILES.values():
        for name in names:
            with atomic_path(out / name) as tmp:
                shutil.copyfile(ctx.inputs[stage].path(name), tmp)
    contract = load_model(ctx.inputs["distill"].path("student.pt")).contract
    golden = _write_golden(ctx, out, contract)
    _plot_fairness(validation, out / "fairness.png")
    cross = validation["artifacts"]["openvino_int8"]["evaluation"].get("cross_group_fmr")
    if cross is not None:
        fmr_heatmap(cross, validation["groups"], out / "fmr_heatmap.png", "openvino_int8: impostor FMR by group pair")
    ledger = build_ledger(validation)
    accuracy_by_stage({r["stage"]: r["accuracy"] for r in ledger}, validation["groups"], out / "ledger.png")
    lineage = {
        "recipe": recipe.to_dict(),
        "code": git_commit(),
        "packages": package_versions(),
        "seed": recipe.seed,
        "world_seed": recipe.data.world.seed,
        "stages": {name: {"key": o.key, "files": o.files} for name, o in ctx.inputs.items()},
    }
    write_text(out / "report.md", _report(recipe.name, recipe.release.version, ctx.inputs, rows, lineage))
    write_text(out / "recipe.resolved.yaml", recipe.to_yaml())  # the pipeline rewrites the same bytes
    files = sha256_tree(out)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": recipe.name,
        "version": recipe.release.version,
        "description": recipe.release.description,
        "files": files,
        "contract": contract.to_dict(),
        "artifacts": {
            name: {
                "files": ARTIFACT_FILES[name][1],
                "metrics": validation["artifacts"][name],
            }
            for name in ARTIFACT_FILES
        },
        "reference": {"teacher": validation["artifacts"]["teacher"]},
        "student_fp32": validation["artifacts"]["torch_fp32"],
        "parity": ctx.inputs["export"].metrics["parity"],
        "int8_drift": ctx.inputs["compress"].metrics["drift_vs_fp32"],
        "gates": [r.to_dict() for r in rows],
        "fairness_ledger": ledger,
        "golden": golden,
        "lineage": lineage,
    }
    write_json(out / MANIFEST_FILE, manifest)
    return {"gates": [r.to_dict() for r in rows], "version": recipe.release.version}


def _write_golden(ctx: StageContext, out: Path, contract: Any) -> dict[str, Any]:
    """One benchmark face as PNG, its model input as .npy, and every artifact's embedding of it."""
    from PIL import Image

    face = PairBenchmark.load(ctx.inputs["data"].path("benchmark.npz")).images[:1]
    with atomic_path(out / "golden_input.png") as tmp:
        Image.fromarray(face[0].transpose(1, 2, 0)).save(tmp, format="PNG")
    x = to_model_input_numpy(face, contract).astype(np.float32)
    with atomic_path(out / "golden_input.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, x)
    runners = {
        "onnx_fp32": onnx_runner(out / "student.onnx"),
        "openvino_fp32": openvino_runner(out / "student_fp32.xml", precision="f32"),
        "openvino_int8": openvino_runner(out / "student_int8.xml"),
    }
    return {
        "input": "golden_input.npy",
        "image": "golden_input.png",
        "embeddings": {name: runner(x)[0].astype(float).tolist() for name, runner in runners.items()},
        "min_cosine": GOLDEN_MIN_COSINE,
    }


def _plot_fairness(validation: dict[str, Any], path: Path) -> None:
    """Grouped bars: per-group accuracy of every artifact, so a bias shift is seen at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = validation["groups"]
    names = artifact_order(validation)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    lows = []
    for i, name in enumerate(names):
        accs = [100 * validation["artifacts"][name]["evaluation"]["groups"][g]["accuracy_mean"] for g in groups]
        lows.append(min(accs))
        ax.bar(np.arange(len(groups)) + (i - (len(names) - 1) / 2) * width, accs, width, label=name)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("verification accuracy (%)")
    ax.set_ylim(max(0.0, min(lows) - 5), 100)
    ax.set_title("Per-group accuracy by artifact")
    ax.legend(fontsize=8, ncol=len(names), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def _report(name: str, version: str, inputs: dict[str, Any], rows: list[GateResult], lineage: dict[str, Any]) -> str:
    validation = inputs["validate"].metrics
    parity = inputs["export"].metrics["parity"]
    drift = inputs["compress"].metrics["drift_vs_fp32"]
    teacher, distill = inputs["teacher"].metrics, inputs["distill"].metrics
    code = lineage["code"]
    lines = [
        f"# {name} {version}",
        "",
        f"Student `{distill['student']}` ({distill['params']:,} parameters) distilled from teacher "
        f"`{distill['teacher']}` for {distill['steps']} steps on online procedural faces.",
        "",
        f"Benchmark: {validation['pairs']} pairs, groups {', '.join(validation['groups'])}; accuracy (%) with the "
        "insightface 10-fold protocol per group; STD is the sample std of the group accuracies; SER = "
        "(100 - min)/(100 - max); latency is the batch-1 median in ms.",
        "",
        "```",
        accuracy_table(validation),
        "```",
        "",
        "![per-group accuracy](fairness.png)",
        "",
        "## Gates",
        "",
        "```",
        format_gate_table(rows),
        "```",
        "",
        "## Fairness ledger",
        "",
        "Per-group accuracy (%) at every stage of the build; Δ mean is the change from the stage before. Per-group",
        "FMR/FNMR at each artifact's global threshold (FMR 1e-3 target) are in `manifest.json` (`fairness_ledger`).",
        "",
        format_ledger(build_ledger(validation), validation["groups"]),
        "",
        "![accuracy by group and stage](ledger.png)",
        "",
        *(
            ["![cross-group impostor FMR](fmr_heatmap.png)", ""]
            if "cross_group_fmr" in validation["artifacts"]["openvino_int8"]["evaluation"]
            else []
        ),
        "## Parity and drift",
        "",
        *[f"- {k} vs torch: min cosine {v['min_cosine']:.6f}" for k, v in parity.items()],
        f"- openvino_int8 vs openvino_fp32 on {drift['n']} held-out faces: mean cosine {drift['mean_cosine']:.4f}, "
        f"min {drift['min_cosine']:.4f}",
        "",
        "## Lineage",
        "",
        f"- code: {code['commit']}{' (uncommitted changes)' if code['dirty'] else ''}",
        f"- packages: {', '.join(f'{k} {v}' for k, v in lineage['packages'].items())}",
        f"- seed {lineage['seed']}, world seed {lineage['world_seed']}",
        f"- teacher: {teacher.get('model')} ({teacher.get('steps', 'checkpoint')} steps)",
        "",
        "Verify: every file's sha256 is in `manifest.json`; `golden_input.npy` run through each artifact must give "
        "its `golden.embeddings` entry (cosine at least `golden.min_cosine`).",
        "",
    ]
    return "\n".join(lines)
