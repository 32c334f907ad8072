"""What ``factory deploy bundle`` and ``factory deploy validate`` do, on a recipe's build (built first if needed).

Both bring the build up to its validate stage (cached stages are reused, so after ``factory build`` this costs
nothing), write the target's bundle from the shipped artifacts into ``<run_dir>/bundles/<target>`` (or ``--out``),
and the same release and target always give the same ``bundle.json``: a report made from a bundle written here is
accepted by the build's deploy stage. ``validate`` then runs the bundle through the target's transport, or checks a
report made by hand and keeps it in ``<run_dir>/deploy_reports/<target>.json``, where the next ``factory build``
takes it for a manual target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory.data.benchmark import PairBenchmark
from factory.data.stage import BENCHMARK_FILE
from factory.deploy.bundle import Shipped, write_bundle
from factory.deploy.report import check_report, summary, target_rows
from factory.deploy.stage import manual_report
from factory.deploy.transports import run_on_target
from factory.files import read_json, write_json
from factory.pipeline.build import build, run_dir_for
from factory.recipe import Recipe
from factory.recipe.loader import load_target
from factory.recipe.targets import TargetConfig, target_path


@dataclass
class Bundled:
    """A target's bundle, written."""

    target: TargetConfig
    dir: Path
    bundle: dict[str, Any]


def target_of(recipe: Recipe, entry: str) -> TargetConfig:
    """The target named ``entry``: one of the recipe's, a factory target name, or a path to a target file."""
    for path in recipe.deploy.targets:
        if Path(path).stem == entry:
            return load_target(path)
    return load_target(target_path(entry, Path.cwd()))


def bundle_target(
    recipe: Recipe, target: TargetConfig, out: Path | None = None, echo: Callable[[str], None] = print
) -> Bundled:
    """Build ``recipe`` up to validate (cached stages reused) and write ``target``'s bundle."""
    result = build(recipe, until="validate", echo=echo, progress=False)
    shipped = [
        Shipped(b.artifact, b.root) for out_ in result.stages.values() for b in out_.built() if b.artifact.shipped
    ]
    bench = PairBenchmark.load(result.stages["data"].path(BENCHMARK_FILE))
    folder = out or run_dir_for(recipe) / "bundles" / target.name
    release = {"name": recipe.name, "version": recipe.release.version}
    bundle = write_bundle(folder, target, shipped, bench, release, recipe.validate.flip, recipe.validate.batch_size)
    return Bundled(target, folder, bundle)


def validate_target(
    recipe: Recipe, bundled: Bundled, report_file: Path | None, echo: Callable[[str], None] = print
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the bundle on its target (or take ``report_file``), refuse a foreign report, return (gate rows, summary).

    An accepted hand-made report is kept where the build's deploy stage reads it for a manual target.

    Raises:
        TransportError: the target could not be reached or wrote no report.
        ReportRefused: the report was not made from this bundle.

    """
    report = read_json(report_file) if report_file is not None else run_on_target(bundled.target, bundled.dir, echo)
    check_report(report, bundled.dir, bundled.bundle)
    if report_file is not None:
        write_json(manual_report(run_dir_for(recipe), bundled.target.name), report)
    else:
        write_json(bundled.dir / "report.json", report)
    rows = target_rows(bundled.target, bundled.dir, bundled.bundle, report)
    return rows, summary(bundled.dir, bundled.bundle, report)
