"""Reading a target's report back: refused unless it was made from this bundle, then turned into gate rows.

A report is accepted only when its ``bundle_sha256`` is the sha256 of the ``bundle.json`` the factory wrote and every
file hash it found on the target is the one the bundle lists: a report from another build, an edited bundle or a
tampered model file is refused by name. An accepted report gives one gate row per check, shaped like the release
gates' rows (:class:`factory.release.gates.GateResult`): files intact, engines built, and per artifact that it ran,
its golden cosine, the largest change of a group's accuracy from the build machine's on the same faces, and the
batch-1 latency when the target sets a limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from factory.files import sha256_file
from factory.recipe.targets import TargetConfig
from factory.release.gates import CHECK
from factory.runtime.target_runner import BUNDLE_FILE, REPORT_FORMAT


class ReportRefused(ValueError):
    """A report that does not belong to this bundle (other bundle, other files, other target) or is malformed."""


def check_report(report: Any, bundle_dir: Path, bundle: dict[str, Any]) -> None:
    """Refuse ``report`` unless it was made by running exactly this bundle.

    Raises:
        ReportRefused: naming what differs.

    """
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        got = report.get("format") if isinstance(report, dict) else type(report).__name__
        raise ReportRefused(f"not a target report: format {got!r}, expected {REPORT_FORMAT!r}")
    for key in ("target", "bundle_sha256", "files", "checks", "engines", "artifacts"):
        if key not in report:
            raise ReportRefused(f"the report lacks {key!r}")
    name = bundle["target"]["name"]
    if report["target"] != name:
        raise ReportRefused(f"the report is for target {report['target']!r}, expected {name!r}")
    expected = sha256_file(bundle_dir / BUNDLE_FILE)
    if report["bundle_sha256"] != expected:
        raise ReportRefused(
            f"the report was made from bundle {str(report['bundle_sha256'])[:12]}…, not from this release's bundle "
            f"for {name} ({expected[:12]}…): rebuild the bundle with `factory deploy bundle` and run that one"
        )
    found = report["files"] if isinstance(report["files"], dict) else {}
    differ = sorted(f for f, digest in bundle["files"].items() if found.get(f) != digest)
    extra = sorted(set(found) - set(bundle["files"]))
    if differ or extra:
        what = ", ".join(
            [*(f"{f} (hash differs or missing)" for f in differ), *(f"{f} (not in the bundle)" for f in extra)]
        )
        raise ReportRefused(f"the report's file hashes do not match the release's bundle for {name}: {what}")


def target_rows(
    target: TargetConfig, bundle_dir: Path, bundle: dict[str, Any], report: dict[str, Any]
) -> list[dict[str, Any]]:
    """The gate rows of an accepted report (``GateResult`` fields), in the order a reader checks them.

    File integrity has no row: a report whose hashes differ from the bundle's is refused (:func:`check_report`).
    """
    name = target.name
    rows = []
    for engine, built in report["engines"].items():
        rows.append(_check(engine, name, "engine built on target", bool(built.get("built")), built.get("error")))
    groups = bundle["benchmark"]["groups"]
    for entry in bundle["artifacts"]:
        artifact = entry["artifact"]
        where = artifact["name"]
        measured = report["artifacts"].get(artifact["name"]) or {"error": "not in the report"}
        if "error" in measured:
            rows.append(_check(where, name, "ran on target", False, measured["error"]))
            continue
        rows.append(
            _row(where, name, "golden cosine on target", measured["golden_cosine"], artifact["golden_min_cosine"], ">=")
        )
        build = reference_accuracy(entry, bundle_dir, bundle)
        change = max(abs(measured["accuracy"][g] - build[g]) for g in groups)
        worst = max(groups, key=lambda g: abs(measured["accuracy"][g] - build[g]))
        rows.append(
            _row(
                where,
                name,
                "group accuracy change vs build",
                change,
                target.max_accuracy_change,
                "<=",
                detail=f"largest in {worst}: {100 * build[worst]:.1f}% -> {100 * measured['accuracy'][worst]:.1f}%",
            )
        )
        if target.max_latency_ms is not None:
            latency = measured["latency_by_batch"]["1"]
            rows.append(_row(where, name, "latency on target (ms)", latency["median_ms"], target.max_latency_ms, "<="))
    return rows


def refused_rows(target: TargetConfig, reason: str) -> list[dict[str, Any]]:
    """The one failing row of a target that gave no acceptable report (unreachable, refused, not run)."""
    return [_check("-", target.name, "report from target", False, reason)]


def reference_accuracy(entry: dict[str, Any], bundle_dir: Path, bundle: dict[str, Any]) -> dict[str, float]:
    """The build machine's per-group accuracy on the bundle's faces at the bundle's threshold."""
    with np.load(bundle_dir / bundle["benchmark"]["file"], allow_pickle=False) as data:
        issame, groups = data["issame"].astype(bool), data["groups"]
    same = np.asarray(entry["reference_similarities"]) >= entry["threshold"]
    names = bundle["benchmark"]["groups"]
    return {g: float(np.mean(same[groups == i] == issame[groups == i])) for i, g in enumerate(names)}


def summary(bundle_dir: Path, bundle: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Per artifact what the target measured (accuracy per group, golden cosine, latency, benchmark_app), compact."""
    out: dict[str, Any] = {}
    for entry in bundle["artifacts"]:
        name = entry["artifact"]["name"]
        measured = report["artifacts"].get(name, {})
        if "error" in measured or not measured:
            out[name] = {"error": measured.get("error", "not in the report")}
            continue
        diffs = np.abs(np.asarray(measured["similarities"]) - np.asarray(entry["reference_similarities"]))
        out[name] = {
            "accuracy": measured["accuracy"],
            "accuracy_mean": measured["accuracy_mean"],
            "build_accuracy": reference_accuracy(entry, bundle_dir, bundle),
            "golden_cosine": measured["golden_cosine"],
            "max_similarity_change": float(diffs.max()),
            "latency_by_batch": measured["latency_by_batch"],
            "benchmark_app": measured.get("benchmark_app", {}),
        }
    return out


def targets_table(targets: dict[str, Any]) -> str:
    """Per target and artifact: accuracy there and on the build machine, golden cosine, latency, benchmark_app."""
    from factory.runtime.benchmark_app import AGREEMENT

    header = (
        "target",
        "artifact",
        "acc %",
        "build %",
        "golden cos",
        "batch",
        "median ms [CI]",
        "p99",
        "faces/s",
        "benchmark_app ms",
        "difference",
        f"within {AGREEMENT:.0%}",
    )
    rows = []
    for target, result in targets.items():
        for name, s in result.get("artifacts", {}).items():
            if "error" in s:
                rows.append((target, name, "-", "-", "-", "-", s["error"][:60], "", "", "", "", ""))
                continue
            build = float(np.mean(list(s["build_accuracy"].values())))
            for batch, latency in s["latency_by_batch"].items():
                app = s.get("benchmark_app", {}).get(batch)
                low, high = latency.get("median_ci") or (latency["median_ms"],) * 2
                timed = f"{latency['median_ms']:.2f} [{low:.2f}, {high:.2f}]"
                if app is None:
                    cross = ("-", "-", "-")
                elif "error" in app:
                    cross = ("failed", "-", "-")
                else:
                    d = app["difference"]
                    cross = (f"{app['median_ms']:.2f}", f"{100 * d:+.1f} %", "yes" if abs(d) <= AGREEMENT else "no")
                rows.append(
                    (
                        target,
                        name,
                        f"{100 * s['accuracy_mean']:.2f}",
                        f"{100 * build:.2f}",
                        f"{s['golden_cosine']:.6f}",
                        batch,
                        timed,
                        f"{latency['p99_ms']:.2f}",
                        f"{latency['throughput_per_s']:.0f}",
                        *cross,
                    )
                )
    if not rows:
        return ""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in (header, *rows)]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _check(artifact: str, target: str, gate: str, passed: bool, detail: str | None) -> dict[str, Any]:
    """A yes/no row (mode ``check``): something that either happened on the target or did not."""
    return _row(artifact, target, gate, float(passed), 1.0, ">=", detail or "") | {"mode": CHECK}


def _row(
    artifact: str, target: str, gate: str, value: float, limit: float, comparison: str, detail: str = ""
) -> dict[str, Any]:
    passed = value >= limit if comparison == ">=" else value <= limit
    return {  # no unit: the gate table reads it from the label ("ms", "cosine", else a fraction)
        "artifact": artifact,
        "target": target,
        "gate": gate,
        "value": float(value),
        "limit": float(limit),
        "comparison": comparison,
        "passed": bool(passed),
        "key": "deploy.targets",
        "detail": "" if passed else detail,
    }
