"""The release stage: when every gate passes, a self-describing, versioned bundle a deployer can verify and run.

The stage directory holds the bundle ``<name>-<version>/`` (what ``<run_dir>/release`` names) and its tarball
``<name>-<version>.tar.gz``. The bundle holds every shipped artifact of the build under the file names their stages
gave them, and::

    golden_input.png / .npy           one aligned face, and exactly what the models are fed for it
    targets/<target>/                 the on-target runner bundle each deploy target ran (run_target.py, the
                                      runtime layer, its artifacts, benchmark faces, golden vectors)
    pair_distances.npz                every artifact's distance on every benchmark pair (``factory compare``)
    benchmark_labels.npz              the benchmark's pair labels, groups and subjects (no images)
    recipe.resolved.yaml              the recipe after extends and overrides
    fairness.png                      per-group accuracy of every artifact
    ledger.png, fmr_heatmap.png       accuracy by group and stage; impostor FMR by group pair
    report.md                         readable summary: accuracy and fairness table, gates, parity, lineage
    MODEL_CARD.md                     the Hugging Face card shape (:mod:`factory.release.model_card`)
    manifest.json                     schema factory.release/3 (:mod:`factory.runtime.manifest`)
    manifest.sig                      ed25519 signature of manifest.json, when release.signing_key is set

The manifest lists the sha256 of every other file; its own sha256 is printed at release (a bundle cannot hold the
hash of the manifest that lists it) and checked by ``factory release verify --manifest-sha256``.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from factory.compress.layer_drift import format_layers
from factory.data.benchmark import PairBenchmark
from factory.data.stage import BENCHMARK_FILE
from factory.deploy.report import targets_table
from factory.evaluate.ledger import build_ledger, format_ledger
from factory.evaluate.operational import report_lines
from factory.evaluate.plots import accuracy_by_stage, fmr_heatmap
from factory.evaluate.stage import DISTANCES_FILE
from factory.evaluate.tables import accuracy_table, artifact_order, comparison_table, latency_table
from factory.export.parity import format_group_drift
from factory.files import atomic_path, sha256_file, sha256_tree, write_json, write_text
from factory.pipeline.stage import BuiltArtifact, GateFailure, Stage, StageContext, StageResult
from factory.recipe.inputs import licence_record, supplied_inputs
from factory.release.gates import GateResult, evaluate_gates, failure_message, format_gate_table, gate_summary
from factory.release.model_card import render_model_card
from factory.release.provenance import git_commit, package_versions
from factory.release.thresholds import operating_thresholds
from factory.runtime.artifacts import open_runner
from factory.runtime.manifest import LABELS_FILE, MANIFEST_FILE, MANIFEST_FORMAT
from factory.runtime.preprocess import to_model_input_numpy
from factory.runtime.signing import SIGNATURE_FILE, sign, signer_fingerprint


def make_release(ctx: StageContext) -> StageResult:
    """Check the gates; if all pass, write the bundle and its tarball into the stage directory.

    Raises:
        GateFailure: one or more gates failed; nothing is written.
    """
    recipe, release = ctx.recipe, ctx.config["release"]
    validation = ctx.inputs["validate"].metrics
    built = ctx.artifacts()
    sizes = {b.name: sum((b.root / f).stat().st_size for f in b.artifact.files) for b in built}
    targets = ctx.inputs["deploy"].metrics["targets"]
    rows = evaluate_gates(ctx.config["gates"], validation, [b.artifact for b in built], targets, sizes)
    # Every target passed in the deploy stage (a failure stops the build there); its rows join the table.
    rows += [GateResult(**row) for result in targets.values() for row in result["rows"]]
    if not all(r.passed for r in rows):
        raise GateFailure(failure_message(rows), [r.to_dict() for r in rows], validation)

    bundle = f"{ctx.config['name']}-{release.version}"
    out = ctx.work_dir / bundle
    out.mkdir()
    shipped = [b for b in built if b.artifact.shipped]
    for b in shipped:
        for name in b.artifact.files:
            _copy(b.root / name, out / name)
    golden, contract = _write_golden(ctx, out, shipped)
    for name, t in targets.items():  # the runner bundle each target ran, as it ran it
        _copy_tree(ctx.inputs["deploy"].dir / t["bundle"], out / "targets" / name)
    _copy(ctx.inputs["validate"].path(DISTANCES_FILE), out / DISTANCES_FILE)
    benchmark = ctx.inputs["data"].path(BENCHMARK_FILE)
    PairBenchmark.save_labels(benchmark, out / LABELS_FILE)
    thresholds = operating_thresholds(out / DISTANCES_FILE, benchmark, [b.name for b in shipped])
    ledger = build_ledger(validation)
    plots = _write_plots(validation, shipped, ledger, out)
    lineage = {
        "recipe": recipe.to_dict(),
        "code": git_commit(),
        "packages": package_versions(),
        "seed": recipe.seed,
        "world_seed": recipe.data.world.seed,
        "stages": {name: {"key": o.key, "files": o.files} for name, o in ctx.inputs.items()},
    }
    licences = licence_record(recipe)
    report = _report(ctx.config["name"], release.version, ctx, built, rows, lineage, ledger, "fmr_heatmap.png" in plots)
    write_text(out / "report.md", report)
    write_text(out / "recipe.resolved.yaml", recipe.to_yaml())
    card = _card_facts(ctx, shipped, sizes, thresholds, licences, gate_summary([r.to_dict() for r in rows]), plots)
    write_text(out / "MODEL_CARD.md", render_model_card(card))
    signed_by = None if release.signing_key is None else signer_fingerprint(release.signing_key)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": ctx.config["name"],
        "version": release.version,
        "description": release.description,
        "files": sha256_tree(out),
        "contract": contract,
        "artifacts": {b.name: {**b.artifact.to_dict(), "metrics": validation["artifacts"][b.name]} for b in shipped},
        # Measured but not shipped (the teacher, the torch student): what the shipped artifacts are compared with.
        "reference": {b.name: validation["artifacts"][b.name] for b in built if not b.artifact.shipped},
        "comparisons": validation.get("comparisons", {}),
        "benchmark": {
            "sha256": sha256_file(benchmark),
            "pairs": validation["pairs"],
            "groups": validation["groups"],
            "distances": DISTANCES_FILE,
            "labels": LABELS_FILE,
        },
        "thresholds": thresholds,
        "gates": [r.to_dict() for r in rows],
        # What each deploy target measured with its bundle's runner (deploy stage), and where that bundle is here.
        "targets": {
            name: {**{k: v for k, v in t.items() if k not in ("rows", "bundle", "report")}, "bundle": f"targets/{name}"}
            for name, t in targets.items()
        },
        "fairness_ledger": ledger,
        "golden": golden,
        "licences": licences,
        "signature": None
        if signed_by is None
        else {"algorithm": "ed25519", "file": SIGNATURE_FILE, "key_sha256": signed_by},
        "lineage": lineage,
    }
    write_json(out / MANIFEST_FILE, manifest)
    if release.signing_key is not None:
        write_text(out / SIGNATURE_FILE, sign((out / MANIFEST_FILE).read_bytes(), release.signing_key) + "\n")
    tarball = ctx.work_dir / f"{bundle}.tar.gz"
    _write_tarball(out, tarball)
    return StageResult(
        {
            "gates": [r.to_dict() for r in rows],
            "version": release.version,
            "published": bundle,  # the pipeline points <run_dir>/release here
            "manifest_sha256": sha256_file(out / MANIFEST_FILE),
            "signed": signed_by is not None,
            "tarball": tarball.name,
            "tarball_sha256": sha256_file(tarball),
        }
    )


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _copy_tree(source: Path, target: Path) -> None:
    for path in sorted(source.rglob("*")):
        if path.is_file():
            _copy(path, target / path.relative_to(source))


def _write_tarball(bundle: Path, path: Path) -> None:
    """``<name>-<version>.tar.gz`` of the bundle directory, the same bytes for the same files.

    Sorted members, no owners and one fixed time: two releases of the same files are the same tarball.
    """

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as zipped:
            with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(bundle, arcname=bundle.name, recursive=False, filter=normalise)
                for member in sorted(bundle.rglob("*")):
                    tar.add(
                        member,
                        arcname=f"{bundle.name}/{member.relative_to(bundle).as_posix()}",
                        recursive=False,
                        filter=normalise,
                    )


def _write_plots(
    validation: dict[str, Any], shipped: list[BuiltArtifact], ledger: list[dict[str, Any]], out: Path
) -> list[str]:
    """fairness.png, ledger.png and (where cross-group impostors were measured) fmr_heatmap.png; their names."""
    _plot_fairness(validation, out / "fairness.png")
    plots = ["fairness.png"]
    heatmap = _heatmap_artifact(validation, shipped)
    if heatmap is not None:
        cross = validation["artifacts"][heatmap]["evaluation"]["cross_group_fmr"]
        fmr_heatmap(cross, validation["groups"], out / "fmr_heatmap.png", f"{heatmap}: impostor FMR by group pair")
        plots.append("fmr_heatmap.png")
    accuracy_by_stage({r["stage"]: r["accuracy"] for r in ledger}, validation["groups"], out / "ledger.png")
    return [*plots, "ledger.png"]


def _card_facts(
    ctx: StageContext,
    shipped: list[BuiltArtifact],
    sizes: dict[str, int],
    thresholds: dict[str, Any],
    licences: dict[str, Any],
    gates: str,
    plots: list[str],
) -> dict[str, Any]:
    """What the model card says, gathered from the stages (:func:`factory.release.model_card.render_model_card`)."""
    recipe, release = ctx.recipe, ctx.config["release"]
    validation, distill = ctx.inputs["validate"].metrics, ctx.inputs["distill"].metrics
    supplied = supplied_inputs(recipe)
    faces = [k for k in supplied if k.startswith(("data.", "teacher.", "distill."))]
    deploy = ctx.inputs["deploy"].metrics["targets"]
    benchmark = "procedural benchmark of the built-in world" if recipe.data.benchmark is None else recipe.data.benchmark
    return {
        "name": ctx.config["name"],
        "version": release.version,
        "description": release.description,
        "intended_use": release.intended_use,
        "licence": release.licence,
        "student": distill["student"],
        "params": distill["params"],
        "teachers": _teachers(distill),
        "teacher_lineage": _teacher_lineage(ctx.inputs["teacher"].metrics).removeprefix("- "),
        "steps": distill["steps"],
        "data": distill.get("data", "online procedural faces"),
        "procedural": not faces,
        "benchmark": f"{benchmark}: {validation['pairs']} pairs",
        "groups": validation["groups"],
        "artifacts": {
            b.name: {
                "runtime": b.artifact.runtime,
                "precision": b.artifact.precision,
                "files": list(b.artifact.files),
                "size_mb": sizes[b.name] / 1e6,
            }
            for b in shipped
        },
        "validation": validation,
        "thresholds": thresholds,
        "targets": {
            name: {
                "runtime": t["runtime"],
                "artifacts": {
                    a: {
                        "accuracy_mean": m.get("accuracy_mean"),
                        "latency_ms": ((m.get("latency_by_batch") or {}).get("1") or {}).get("median_ms"),
                    }
                    for a, m in t["artifacts"].items()
                    if "error" not in m
                },
            }
            for name, t in deploy.items()
        },
        "licences": licences,
        "gates": gates,
        "plots": plots,
    }


def _write_golden(ctx: StageContext, out: Path, shipped: list[BuiltArtifact]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One benchmark face as PNG, its model input as .npy, and every shipped artifact's embedding of it."""
    from PIL import Image

    with np.load(ctx.inputs["data"].path(BENCHMARK_FILE), allow_pickle=False) as data:
        face = data["images"][:1]  # the first face only (the benchmark is read whole by the validate stage)
    with atomic_path(out / "golden_input.png") as tmp:
        Image.fromarray(face[0].transpose(1, 2, 0)).save(tmp, format="PNG")
    # The copies in the bundle are what is run: the golden vectors describe exactly the shipped files.
    runners = {b.name: open_runner(b.artifact, out) for b in shipped}
    contracts = {r.contract for r in runners.values()}
    if len(contracts) != 1:
        raise ValueError(f"the shipped artifacts disagree on their input contract: {sorted(map(str, contracts))}")
    (contract,) = contracts
    x = to_model_input_numpy(face, contract).astype(np.float32)
    with atomic_path(out / "golden_input.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, x)
    golden = {
        "input": "golden_input.npy",
        "image": "golden_input.png",
        "embeddings": {name: runner(x)[0].astype(float).tolist() for name, runner in runners.items()},
    }
    return golden, contract.to_dict()


def _heatmap_artifact(validation: dict[str, Any], shipped: list[BuiltArtifact]) -> str | None:
    """The most derived shipped artifact with cross-group impostor rates (what a deployer most likely runs)."""
    names = [b.name for b in shipped if "cross_group_fmr" in validation["artifacts"][b.name]["evaluation"]]
    return names[-1] if names else None


def _plot_fairness(validation: dict[str, Any], path: Path) -> None:
    """Grouped bars: per-group accuracy of every artifact, so a bias shift is seen at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = validation["groups"]
    names = artifact_order(validation)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors  # tab10 alone repeats from the 11th
    lows = []
    for i, name in enumerate(names):
        accs = [100 * validation["artifacts"][name]["evaluation"]["groups"][g]["accuracy_mean"] for g in groups]
        lows.append(min(accs))
        offset = (i - (len(names) - 1) / 2) * width
        ax.bar(np.arange(len(groups)) + offset, accs, width, label=name, color=colours[i % len(colours)])
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("verification accuracy (%)")
    ax.set_ylim(max(0.0, min(lows) - 5), 100)
    ax.set_title("Per-group accuracy by artifact")
    # four to a row: one row of eleven artifacts is wider than the figure and tight_layout gives up (with a warning)
    ax.legend(fontsize=8, ncol=min(len(names), 4), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def _comparison_section(validation: dict[str, Any]) -> list[str]:
    """Report lines: every artifact against its parent on the same pairs (paired intervals, McNemar per group)."""
    table = comparison_table(validation)
    if not table:
        return []
    return [
        "## Paired comparisons",
        "",
        "Each artifact against the one it derives from, on the same pairs and the same bootstrap draws: change in "
        "accuracy (points) with its paired interval, and per group the exact McNemar p-value on the pair decisions "
        "(a small p: the two models err on different pairs more than chance allows).",
        "",
        "```",
        table,
        "```",
        "",
    ]


def _latency_section(validation: dict[str, Any]) -> list[str]:
    table = latency_table(validation)
    if not table:
        return []
    return [
        "## Latency",
        "",
        "The runtime's own inference call with its input bound beforehand, after warm-up, at the recipe's threads;",
        "[ ] is the median's distribution-free interval at the recipe's level. Each OpenVINO IR is also timed by its",
        "own `benchmark_app` (sync API, one stream, same threads, precision and batch); difference = ours / its - 1.",
        "",
        "```",
        table,
        "```",
        "",
    ]


def _targets_section(targets: dict[str, Any]) -> list[str]:
    table = targets_table(targets)
    if not table:
        return []
    where = [
        f"- {name}: {t['runtime']} via {t['transport']}; {_machine(t.get('environment', {}))}"
        for name, t in targets.items()
    ]
    return [
        "## Targets",
        "",
        "Each target ran its bundle (shipped here in `targets/<name>`: the artifacts, the runtime layer, benchmark",
        "faces, golden vectors, `run_target.py`) with nothing but numpy and its runtime; acc % is per-group accuracy",
        "at the bundle's threshold on the bundle's faces there, build % the same on this machine.",
        "",
        *where,
        "",
        "```",
        table,
        "```",
        "",
    ]


def _machine(env: dict[str, Any]) -> str:
    runtime = next((f"{k} {v}" for k, v in env.items() if k in ("onnxruntime", "openvino", "tensorrt") and v), "")
    torch = "torch not importable" if env.get("torch_importable") is False else "torch importable"
    return ", ".join(x for x in (env.get("platform", "?"), f"python {env.get('python', '?')}", runtime, torch) if x)


def _report(
    name: str,
    version: str,
    ctx: StageContext,
    built: list[BuiltArtifact],
    rows: list[GateResult],
    lineage: dict[str, Any],
    ledger: list[dict[str, Any]],
    heatmap: bool,
) -> str:
    validation = ctx.inputs["validate"].metrics
    teacher, distill = ctx.inputs["teacher"].metrics, ctx.inputs["distill"].metrics
    code = lineage["code"]
    parity = []
    for b in built:
        check = b.artifact.parity
        if check is not None:
            size = sum((b.root / f).stat().st_size for f in b.artifact.files) / 1e6
            p1 = f", 1st percentile {check['p1_cosine']:.6f}" if "p1_cosine" in check else ""
            parity.append(
                f"- {b.name} ({size:.2f} MB) vs {check['against']} on {check['n']} inputs: min cosine "
                f"{check['min_cosine']:.6f}, mean {check['mean_cosine']:.6f}{p1}"
            )
            parity.extend(format_group_drift(check))
            if check.get("layers_moved_most"):
                parity.append(f"  - layers moved most: {format_layers(check['layers_moved_most'])}")
    lines = [
        f"# {name} {version}",
        "",
        f"Student `{distill['student']}` ({distill['params']:,} parameters) distilled from {_teachers(distill)} "
        f"for {distill['steps']} steps on {distill.get('data', 'online procedural faces')}.",
        "",
        f"Benchmark: {validation['pairs']} pairs, groups {', '.join(validation['groups'])}; accuracy (%) with the "
        "insightface 10-fold protocol per group; STD is the sample std of the group accuracies; SER = "
        "(100 - min)/(100 - max); latency is the batch-1 median in ms. Intervals come from a bootstrap over the "
        "benchmark's subjects that re-runs the whole protocol (thresholds chosen again) in every replicate.",
        "",
        "```",
        accuracy_table(validation),
        "```",
        "",
        "![per-group accuracy](fairness.png)",
        "",
        *_comparison_section(validation),
        *_latency_section(validation),
        *_targets_section(ctx.inputs["deploy"].metrics["targets"]),
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
        *report_lines(validation, "1e-03"),
        "",
        format_ledger(ledger, validation["groups"]),
        "",
        "![accuracy by group and stage](ledger.png)",
        "",
        *(["![cross-group impostor FMR](fmr_heatmap.png)", ""] if heatmap else []),
        "## Parity and drift",
        "",
        *parity,
        "",
        "## Lineage",
        "",
        f"- code: {code['commit']}{' (uncommitted changes)' if code['dirty'] else ''}",
        f"- packages: {', '.join(f'{k} {v}' for k, v in lineage['packages'].items())}",
        f"- seed {lineage['seed']}, world seed {lineage['world_seed']}",
        _teacher_lineage(teacher),
        "",
        "Verify: `factory release verify DIR [--public-key KEY] [--manifest-sha256 HASH]` (or `python "
        "deploy/verify_release.py DIR` on the target) checks every file's sha256 in `manifest.json`, refuses files it "
        "does not list, checks the signature `manifest.sig` and the manifest's own sha256 (printed by the build: a "
        "bundle cannot hold the hash of the manifest that lists it), and runs `golden_input.npy` through each "
        "artifact: its embedding must match `golden.embeddings` (cosine at least the artifact's `golden_min_cosine`).",
        "",
    ]
    return "\n".join(lines)


def _teachers(distill: dict[str, Any]) -> str:
    """Whom the student learnt from: one teacher, or several in their recorded order (MST-KD)."""
    names = distill.get("teachers") or []
    if len(names) > 1:
        return f"{len(names)} `{distill['teacher']}` teachers ({', '.join(names)}, in this order)"
    return f"teacher `{distill['teacher']}`"


def _teacher_lineage(teacher: dict[str, Any]) -> str:
    """The lineage line of the teacher stage: its model and steps, and each teacher's identities when several."""
    line = f"- teacher: {teacher.get('model')} ({teacher.get('steps', 'checkpoint')} steps)"
    if "teachers" not in teacher:
        return line
    if teacher.get("specialists") == "adopted":
        parts = [f"{name} from {t['source']} (sha256 {t['sha256'][:12]})" for name, t in teacher["per_teacher"].items()]
        return f"- teachers (adopted): {teacher.get('model')}: " + "; ".join(parts)
    parts = [
        f"{name} on {t['identities']} identities of {', '.join(t['groups'])}"
        for name, t in teacher["per_teacher"].items()
    ]
    return f"- teachers ({teacher['specialists']}): {teacher.get('model')}, {teacher['steps']} steps each: " + (
        "; ".join(parts)
    )


STAGE = Stage(
    name="release",
    needs=("data", "teacher", "distill", "export", "compress", "validate", "deploy"),
    config=lambda r: {"gates": r.gates, "release": r.release, "name": r.name},
    run=make_release,
    summary=lambda m: (
        f"{gate_summary(m['gates'])}, version {m['version']}"
        + (f", manifest sha256 {m['manifest_sha256'][:12]}" if "manifest_sha256" in m else "")
    ),
    publishes=True,
)
