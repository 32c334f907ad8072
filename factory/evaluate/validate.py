"""The validate stage: accuracy, fairness and latency of every artifact on the same benchmark, in one table.

Each artifact runs through its own runtime (torch, ONNX Runtime, OpenVINO) but sees identical uint8 faces,
preprocessed by the model's own contract. The teacher is measured too, as the reference the student is judged by.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from factory.data.benchmark import CrossGroupImpostors, PairBenchmark
from factory.data.build import CROSS_FILE
from factory.evaluate.benchmark_eval import embed_images, evaluate_embeddings
from factory.evaluate.latency import measure_latency
from factory.evaluate.operational import cross_group_fmr
from factory.evaluate.verification import pair_distances
from factory.export.parity import fixed_inputs
from factory.export.runtimes import Runner, embed_uint8, onnx_runner, openvino_runner, torch_runner
from factory.models.checkpoint import load_model
from factory.train.teacher import load_teacher

if TYPE_CHECKING:
    from factory.pipeline import StageContext

METRICS_FILE = "metrics.json"
REFERENCE = "teacher"
FP32 = "torch_fp32"
INT8 = "openvino_int8"
EXPORTED = ("onnx_fp32", "openvino_fp32", INT8)


def artifact_runners(ctx: StageContext, threads: int) -> dict[str, Callable[[], Runner]]:
    """Lazily built runners for every artifact of the build, by artifact name (build order)."""
    teacher = ctx.inputs["teacher"]
    student = ctx.inputs["distill"].path("student.pt")
    onnx = ctx.inputs["export"].path("student.onnx")
    fp32 = ctx.inputs["export"].path("student_fp32.xml")
    int8 = ctx.inputs["compress"].path("student_int8.xml")
    return {
        REFERENCE: lambda: torch_runner(load_teacher(teacher).eval(), threads=threads),
        FP32: lambda: torch_runner(load_model(student).eval(), threads=threads),
        "onnx_fp32": lambda: onnx_runner(onnx, threads=threads),
        "openvino_fp32": lambda: openvino_runner(fp32, threads=threads, precision="f32"),
        INT8: lambda: openvino_runner(int8, threads=threads),
    }


def validate_artifacts(ctx: StageContext) -> dict[str, Any]:
    """Evaluate every artifact on the benchmark and time the deployable ones at batch 1."""
    cfg = ctx.recipe.validate
    bench = PairBenchmark.load(ctx.inputs["data"].path("benchmark.npz"))
    results: dict[str, Any] = {}
    eval_runners = artifact_runners(ctx, threads=ctx.recipe.threads)
    latency_runners = artifact_runners(ctx, threads=cfg.threads)
    cross_file = ctx.inputs["data"].dir / CROSS_FILE
    cross = CrossGroupImpostors.load(cross_file) if cross_file.exists() else None
    for name, make in eval_runners.items():
        embed = embed_uint8(make())
        progress = name if ctx.progress else None
        embeddings = embed_images(embed, bench.images, cfg.batch_size, cfg.flip, progress)
        entry: dict[str, Any] = {"evaluation": evaluate_embeddings(embeddings, bench).to_dict()}
        if cross is not None:
            cross_emb = embed_images(embed, cross.images, cfg.batch_size, cfg.flip)
            impostor = ~bench.issame
            entry["evaluation"]["cross_group_fmr"] = cross_group_fmr(
                1.0 - pair_distances(embeddings)[impostor] / 2.0,
                bench.groups[impostor],
                1.0 - pair_distances(cross_emb) / 2.0,
                cross.cells,
                len(bench.group_names),
            )
        if name != REFERENCE:
            timed = latency_runners[name]()
            x = fixed_inputs(timed.contract, n=1)
            entry["latency"] = measure_latency(
                lambda timed=timed, x=x: timed(x),
                warmup=cfg.latency_warmup,
                repeats=cfg.latency_repeats,
                threads=cfg.threads,
            ).to_dict()
        results[name] = entry
    return {
        "artifacts": results,
        "order": list(results),  # JSON files may come back with sorted keys: tables and plots keep build order
        "groups": list(bench.group_names),
        "pairs": int(len(bench.issame)),
    }


def artifact_order(metrics: dict[str, Any]) -> list[str]:
    """Artifact names in build order (reference, torch FP32, exported ones)."""
    return [n for n in metrics.get("order", ()) if n in metrics["artifacts"]] or list(metrics["artifacts"])


def accuracy_table(metrics: dict[str, Any]) -> str:
    """Per-group accuracy (%), mean, STD, SER and latency of every artifact, as a fixed-width text table."""
    groups = metrics["groups"]
    head = f"{'artifact':<14}" + "".join(f"{g:>9}" for g in groups) + f"{'mean':>9}{'STD':>8}{'SER':>7}{'ms':>8}"
    lines = [head, "-" * len(head)]
    for name in artifact_order(metrics):
        entry = metrics["artifacts"][name]
        ev = entry["evaluation"]
        accs = "".join(f"{100 * ev['groups'][g]['accuracy_mean']:>9.2f}" for g in groups)
        fair = ev["fairness"]
        ser = fair["ser"]
        ser_text = f"{ser:>7.2f}" if isinstance(ser, (int, float)) and ser is not None else f"{str(ser):>7}"
        ms = f"{entry['latency']['median_ms']:>8.2f}" if "latency" in entry else f"{'-':>8}"
        std = f"{'-':>8}" if fair["std"] is None else f"{100 * fair['std']:>8.2f}"
        lines.append(f"{name:<14}{accs}{100 * fair['mean']:>9.2f}{std}{ser_text}{ms}")
    return "\n".join(lines)


def group_accuracies(metrics: dict[str, Any], artifact: str) -> np.ndarray:
    """Per-group accuracies of one artifact, in the benchmark's group order."""
    groups = metrics["artifacts"][artifact]["evaluation"]["groups"]
    return np.array([groups[g]["accuracy_mean"] for g in metrics["groups"]])
