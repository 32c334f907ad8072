"""The deploy stage: every target of the recipe measures the shipped files on itself before the release is made.

For each target in ``deploy.targets`` it writes the target's bundle (:mod:`factory.deploy.bundle`), runs it through
the target's transport (:mod:`factory.deploy.transports`) or takes the report ``factory deploy validate --report``
stored for a manual target, refuses a report that was not made from that bundle, and turns the rest into gate rows
(:mod:`factory.deploy.report`). Any failing row stops the build here with the gate table, and nothing of the stage is
cached, so the next build asks the target again. A recipe without targets passes through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factory.data.benchmark import PairBenchmark
from factory.data.stage import BENCHMARK_FILE
from factory.deploy.bundle import BundleError, Shipped, write_bundle
from factory.deploy.report import ReportRefused, check_report, refused_rows, summary, target_rows
from factory.deploy.transports import TransportError, run_on_target
from factory.files import read_json, sha256_file, write_json
from factory.pipeline.stage import GateFailure, Stage, StageContext, StageResult, run_dir_for
from factory.recipe import Recipe
from factory.recipe.loader import load_target
from factory.recipe.targets import TargetConfig

REPORTS_DIR = "deploy_reports"  # <run_dir>/deploy_reports/<target>.json: reports ingested by hand


def manual_report(run_dir: Path, target: str) -> Path:
    """Where ``factory deploy validate --report`` keeps a manual target's accepted report."""
    return run_dir / REPORTS_DIR / f"{target}.json"


def deploy_to_targets(ctx: StageContext) -> StageResult:
    """Bundle, run and check every target; raise :class:`GateFailure` when any row fails."""
    targets: list[TargetConfig] = ctx.config["targets"]
    if not targets:
        return StageResult({"targets": {}})
    bench = PairBenchmark.load(ctx.inputs["data"].path(BENCHMARK_FILE))
    shipped = [Shipped(b.artifact, b.root) for b in ctx.artifacts() if b.artifact.shipped]
    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for target in targets:
        result = deploy_one(ctx, target, bench, shipped)
        results[target.name] = result
        rows += result["rows"]
    metrics = {"targets": results}
    if not all(r["passed"] for r in rows):
        from factory.release.gates import GateResult, failure_message

        table = [GateResult(**r) for r in rows]
        raise GateFailure(failure_message(table), [r.to_dict() for r in table])
    return StageResult(metrics)


def deploy_one(ctx: StageContext, target: TargetConfig, bench: PairBenchmark, shipped: list[Shipped]) -> dict[str, Any]:
    """One target: its bundle, its report (run or ingested), the checks; a failure becomes a failing row."""
    folder = ctx.work_dir / "targets" / target.name
    bundle_dir = folder / "bundle"
    result: dict[str, Any] = {"runtime": target.runtime, "transport": target.transport.kind, "bundle": None}
    try:
        bundle = write_bundle(
            bundle_dir,
            target,
            shipped,
            bench,
            {"name": ctx.config["name"], "version": ctx.config["version"]},
            flip=ctx.config["flip"],
            batch_size=ctx.config["batch_size"],
        )
        result["bundle"] = bundle_dir.relative_to(ctx.work_dir).as_posix()
        result["bundle_sha256"] = sha256_file(bundle_dir / "bundle.json")
        stored = ctx.config["reports"].get(target.name)
        if target.transport.kind == "manual" and stored is not None:
            report = read_json(manual_report(run_dir_for(ctx.recipe), target.name))
        else:
            report = run_on_target(target, bundle_dir, ctx.echo)
        check_report(report, bundle_dir, bundle)
    except (BundleError, TransportError, ReportRefused, OSError, ValueError) as e:
        result["rows"] = refused_rows(target, str(e))
        result["error"] = str(e)
        ctx.echo(f"{target.name}: {e}")
        return result
    write_json(folder / "report.json", report)
    result["report"] = (folder / "report.json").relative_to(ctx.work_dir).as_posix()
    result["environment"] = report.get("environment", {})
    result["artifacts"] = summary(bundle_dir, bundle, report)
    result["rows"] = target_rows(target, bundle_dir, bundle, report)
    return result


def _config(recipe: Recipe) -> dict[str, Any]:
    targets = [load_target(path) for path in recipe.deploy.targets]
    run_dir = run_dir_for(recipe)
    reports = {}
    for target in targets:
        stored = manual_report(run_dir, target.name)
        # A manual target's report is an input: a new one re-runs this stage (its sha256 is in the key).
        reports[target.name] = sha256_file(stored) if target.transport.kind == "manual" and stored.is_file() else None
    return {
        "targets": targets,
        "reports": reports,
        "flip": recipe.validate.flip,
        "batch_size": recipe.validate.batch_size,
        "name": recipe.name,
        "version": recipe.release.version,
    }


def _summary(m: dict[str, Any]) -> str:
    if not m["targets"]:
        return "no targets"
    parts = []
    for name, result in m["targets"].items():
        latencies = [
            f"{a} {s['latency_by_batch']['1']['median_ms']:.2f} ms"
            for a, s in result.get("artifacts", {}).items()
            if "latency_by_batch" in s
        ]
        parts.append(f"{name}: " + (", ".join(latencies) or result.get("error", "")))
    return "; ".join(parts)


STAGE = Stage(
    name="deploy",
    needs=("data", "teacher", "distill", "export", "compress"),
    config=_config,
    run=deploy_to_targets,
    summary=_summary,
)
