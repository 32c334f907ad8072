"""`factory data plan`: benchmark sizes for FMR targets (rule of 3) and gates, from assumptions or an earlier build.

The earlier build is faked: a validate stage folder with ``metrics.json`` and ``stage.json`` (naming its upstream
stage) and that upstream stage's artifact records, exactly where a build leaves them. Its intervals are made with
known design effects, so the estimates the plan reads back can be checked by hand.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from statistics import NormalDist

import pytest
from bad_input import EXIT_INPUT, invoke

from factory.evaluate.planning import (
    Drift,
    assumed_evidence,
    format_plan,
    impostors_needed,
    plan_benchmark,
    plan_warnings,
    read_evidence,
)
from factory.recipe import load_recipe
from factory.runtime.artifacts import Artifact

Z = NormalDist().inv_cdf(0.975)
GROUPS = ("alpha", "beta", "gamma", "delta")
N = 600  # pairs per group of the faked earlier build
DEFF, DRIFT_DEFF = 2.0, 1.5  # the design effects its intervals are made with
INT8 = (0.86, 0.90, 0.92, 0.89)
ARTIFACTS = [
    Artifact("teacher", ("t.pt",), "torch", reference=True),
    Artifact("fp32", ("s.onnx",), "onnxruntime", derived_from="teacher", golden_min_cosine=0.9999),
    Artifact("int8", ("a.xml", "a.bin"), "openvino", "int8", derived_from="fp32", golden_min_cosine=0.99),
]
RECIPE = """\
run_dir: {run_dir}
data: {{benchmark_pairs_per_group: 600}}
gates:
  min_accuracy: {{limit: 0.85}}
  max_std: {{limit: 0.05}}
  max_int8_drop: {{limit: 0.01, unresolvable: pass}}
  max_latency_ms: 10
"""


def group_entry(p: float) -> dict:
    half = math.sqrt(DEFF) * Z * math.sqrt(p * (1 - p) / N)  # a bootstrap interval DEFF times a binomial variance
    return {"accuracy_mean": p, "pairs": N, "genuine": N // 2, "ci": [p - half, p + half]}


def evaluation(accuracies: tuple[float, ...]) -> dict:
    mean = sum(accuracies) / len(accuracies)
    return {
        "groups": {g: group_entry(p) for g, p in zip(GROUPS, accuracies, strict=True)},
        "fairness": {"mean": mean, "std": float("nan"), "ci": {"mean": [mean - 0.01, mean + 0.01]}},
        "uncertainty": {"level": 0.95, "replicates": 1000, "seed": 0, "unit": "subject"},
    }


def comparison() -> dict:
    q = 18 / N  # 10 + 8 discordant pairs per group
    half = math.sqrt(DRIFT_DEFF) * Z * math.sqrt(q / N)
    mcnemar = {"pairs": N, "only_against_correct": 10, "only_artifact_correct": 8, "p_value": 0.8}
    return {
        "against": "fp32",
        "level": 0.95,
        "mean": {"delta": -0.004, "ci": [-0.009, 0.001]},
        "std": None,
        "groups": {g: {"delta": -0.004, "ci": [-0.004 - half, -0.004 + half], "mcnemar": mcnemar} for g in GROUPS},
    }


METRICS = {
    "order": ["teacher", "fp32", "int8"],
    "groups": list(GROUPS),
    "pairs": N * len(GROUPS),
    "artifacts": {
        "teacher": {"evaluation": evaluation((0.90, 0.93, 0.94, 0.93))},
        "fp32": {"evaluation": evaluation((0.865, 0.905, 0.92, 0.895))},
        "int8": {"evaluation": evaluation(INT8)},
    },
    "comparisons": {"int8": comparison()},
}


def record(folder: Path, metrics: dict, artifacts: list[Artifact], upstream: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    info = {"artifacts": [a.to_dict() for a in artifacts], "files": {}, "metrics": metrics, "seconds": 1.0}
    (folder / "stage.json").write_text(json.dumps({**info, "upstream_keys": upstream}))


def earlier_build(run_dir: Path, metrics: dict = METRICS) -> Path:
    """The stage folders an earlier build leaves: validate (its metrics) and compress (the artifact records)."""
    record(run_dir / "stages" / "compress" / "c0ffee", {}, ARTIFACTS, {})
    validate = run_dir / "stages" / "validate" / "be11a"
    record(validate, metrics, [], {"compress": "c0ffee"})
    (validate / "metrics.json").write_text(json.dumps(metrics))
    return validate


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(run_dir=tmp_path / "run"))
    return path


def test_rule_of_three_sizes(recipe_file: Path) -> None:
    assert (impostors_needed(1e-3), impostors_needed(1e-4), impostors_needed(0.02)) == (3000, 30000, 150)
    evidence = assumed_evidence(GROUPS)
    for pairs, supported in ((600, [False, False]), (5980, [False, False]), (6000, [True, False]), (60000, [True] * 2)):
        plan = plan_benchmark(load_recipe(recipe_file), evidence, pairs_per_group=pairs)
        assert [(t.target, t.impostors_needed, t.pairs_needed) for t in plan.targets] == [
            (1e-3, 3000, 6000),
            (1e-4, 30000, 60000),
        ]
        assert [t.supported for t in plan.targets] == supported
    warnings = plan_warnings(plan_benchmark(load_recipe(recipe_file), evidence))
    assert warnings == [
        "FMR 1e-03 is not supported by 300 impostor pairs per group (rule of 3: needs 3,000, "
        "data.benchmark_pairs_per_group >= 6,000); its figures are marked unsupported",
        "FMR 1e-04 is not supported by 300 impostor pairs per group (rule of 3: needs 30,000, "
        "data.benchmark_pairs_per_group >= 60,000); its figures are marked unsupported",
    ]  # nothing measured yet: no guesses about the gates


def test_estimates_from_an_earlier_build(recipe_file: Path, tmp_path: Path) -> None:
    folder = earlier_build(tmp_path / "run")
    evidence = read_evidence(load_recipe(recipe_file), GROUPS)
    assert evidence.source is not None and evidence.source.startswith(f"{folder} (")
    assert list(evidence.accuracy) == ["fp32", "int8"]  # the reference teacher is never gated
    assert evidence.accuracy["int8"] == INT8
    assert evidence.design_effect == pytest.approx(DEFF)
    assert evidence.drift_design_effect == pytest.approx(DRIFT_DEFF)
    drift = evidence.drift["int8"]
    assert (drift.against, drift.drop) == ("fp32", pytest.approx(0.004))
    assert drift.discordance == pytest.approx((0.03,) * 4)
    assert (evidence.measured_pairs, evidence.measured_impostors, evidence.assumed) == (N, N // 2, ())

    plan = plan_benchmark(load_recipe(recipe_file), evidence)
    gates = {g.key: g for g in plan.gates}
    # Mean accuracy: z * sqrt(mean p(1-p) * deff / (n k)), for the artifact nearest its limit.
    mean = sum(INT8) / 4
    variance = sum(p * (1 - p) for p in INT8) / 4 * DEFF / 4
    accuracy = gates["min_accuracy"]
    assert (accuracy.artifact, accuracy.estimate) == ("int8", pytest.approx(mean))
    assert accuracy.resolution == pytest.approx(Z * math.sqrt(variance / N))
    assert accuracy.pairs_needed == 20 * math.ceil(Z**2 * variance / (mean - 0.85) ** 2 / 20)
    # Drift: z * sqrt(q * deff_d / (n k)) in the mean, z * sqrt(q * deff_d / n) per group.
    drop = gates["max_int8_drop"]
    assert drop.resolution == pytest.approx(Z * math.sqrt(0.03 * DRIFT_DEFF / (N * 4)))
    assert drop.pairs_needed == 20 * math.ceil(Z**2 * 0.03 * DRIFT_DEFF / 4 / (0.01 - 0.004) ** 2 / 20)
    assert plan.drift_resolution["alpha"] == pytest.approx(Z * math.sqrt(0.03 * DRIFT_DEFF / N))
    # STD: the measured spread less the noise of the benchmark that measured it (E[s^2] = spread^2 + noise).
    std = gates["max_std"]
    noise = sum(p * (1 - p) for p in INT8) / 4 * DEFF / N
    sample_variance = sum((p - mean) ** 2 for p in INT8) / 3
    assert std.artifact == "int8" and std.estimate == pytest.approx(math.sqrt(sample_variance - noise))
    assert std.unresolvable == "fail" and drop.unresolvable == "pass"


def test_more_pairs_resolve_more(recipe_file: Path, tmp_path: Path) -> None:
    earlier_build(tmp_path / "run")
    recipe = load_recipe(recipe_file)
    evidence = read_evidence(recipe, GROUPS)
    sizes = [100, 300, 600, 2000, 6000, 20000]
    plans = [plan_benchmark(recipe, evidence, pairs_per_group=n) for n in sizes]
    for key in ("min_accuracy", "max_std", "max_int8_drop"):
        reach = [next(g for g in p.gates if g.key == key).resolution for p in plans]
        assert all(a > b for a, b in zip(reach, reach[1:], strict=False)), (key, reach)
    resolved = [{g.key for g in p.gates if g.resolved} for p in plans]
    assert all(a <= b for a, b in zip(resolved, resolved[1:], strict=False)), resolved
    assert resolved[0] == set() and resolved[-1] == {"min_accuracy", "max_std", "max_int8_drop"}
    # The size a gate needs resolves it, and the procedural size below it does not.
    for gate in plans[0].gates:
        at = {
            n: next(g for g in plan_benchmark(recipe, evidence, n).gates if g.key == gate.key)
            for n in (gate.pairs_needed, gate.pairs_needed - 20)
        }
        assert at[gate.pairs_needed].resolved and not at[gate.pairs_needed - 20].resolved, gate


def test_no_earlier_build_uses_stated_assumptions(recipe_file: Path) -> None:
    plan = plan_benchmark(load_recipe(recipe_file))
    assert plan.evidence.source is None and plan.groups == 4  # the built-in world's groups
    text = format_plan(plan, "r.yaml")
    assert "estimates from assumptions (no earlier validation of this recipe to measure them on):" in text
    assert "  assumed: group accuracies around 90% with a spread (STD) of 3.0 points" in text
    assert "  assumed: design effect 1.5 (a person's pairs are correlated)" in text


def test_an_unreadable_earlier_validation_falls_back_to_assumptions(recipe_file: Path, tmp_path: Path) -> None:
    folder = earlier_build(tmp_path / "run", {"groups": 3, "artifacts": {}})
    plan = plan_benchmark(load_recipe(recipe_file))
    assert plan.evidence.source is None
    assert plan.evidence.assumed[0].startswith(f"{folder} is not a validation this plan can read")


def test_cli_plan_check_and_build_print_the_plan_and_warnings(
    recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    earlier_build(tmp_path / "run")
    out = invoke(["data", "plan", "r.yaml"])
    assert out.exit_code == 0, out.text
    lines = out.stdout.splitlines()
    assert lines[0] == "benchmark plan for r.yaml: 4 groups, 600 pairs per group, 95% intervals"
    assert lines[1].startswith(f"estimates from {tmp_path / 'run' / 'stages' / 'validate' / 'be11a'} (")
    assert "1e-03                 3,000        6,000  unsupported" in lines
    gate_rows = [line.split() for line in lines if line.startswith("gates.")]
    assert [row[:4] for row in gate_rows] == [
        ["gates.min_accuracy", "confidence", "fail", "int8"],
        ["gates.max_std", "confidence", "fail", "int8"],
        ["gates.max_int8_drop", "confidence", "pass", "int8"],
    ]
    assert any(line.startswith("600 pairs per group resolve an INT8 drift of 0.85 points") for line in lines)
    warnings = out.stderr.splitlines()
    assert warnings and all(w.startswith("warning: ") for w in warnings)
    assert warnings[2:] == [
        "warning: gates.max_int8_drop may not be resolvable at 600 pairs per group: int8 at 0.40% is 0.60 points from "
        "the limit, its interval reaches about 0.85; about 1,220 pairs per group resolve it (factory data plan); "
        "unresolved it will pass"
    ]

    machine = invoke(["data", "plan", "r.yaml", "--json", "--set", "data.benchmark_pairs_per_group=6000"])
    plan = json.loads(machine.stdout)
    assert machine.exit_code == 0 and plan["pairs_per_group"] == 6000
    assert [t["supported"] for t in plan["targets"]] == [True, False]
    assert {g["key"]: g["resolved"] for g in plan["gates"]} == {
        "min_accuracy": True,
        "max_std": True,
        "max_int8_drop": True,
    }

    check = invoke(["check", "r.yaml"])
    assert check.exit_code == 0 and check.stdout == "r.yaml: ok\n" and check.stderr.splitlines() == warnings
    # A build warns before it starts (here it then stops at an unknown stage, with nothing run).
    build = invoke(["build", "r.yaml", "--until", "nosuch"])
    assert build.exit_code == EXIT_INPUT and build.stderr.splitlines()[: len(warnings)] == warnings

    bad = invoke(["data", "plan", "r.yaml", "--set", "data.benchmark_pairs_per_group=610"])
    assert bad.exit_code == EXIT_INPUT
    assert bad.stderr.strip() == (
        "--set data.benchmark_pairs_per_group=610: data.benchmark_pairs_per_group: got 610 (expected a multiple of "
        "20: 10 folds, half genuine)"
    )


def test_without_records_every_listed_reference_is_left_ungated() -> None:
    from factory.evaluate.planning import evidence_from_metrics

    # Several teachers (MST-KD) and no artifact records: the validation's own list says which are references.
    teachers = {"teacher_a": METRICS["artifacts"]["teacher"], "teacher_b": METRICS["artifacts"]["teacher"]}
    metrics = {
        **METRICS,
        "order": ["teacher_a", "teacher_b", "fp32", "int8"],
        "references": ["teacher_a", "teacher_b"],
        "artifacts": {**teachers, "fp32": METRICS["artifacts"]["fp32"], "int8": METRICS["artifacts"]["int8"]},
    }
    assert list(evidence_from_metrics(metrics, [], "earlier").accuracy) == ["fp32", "int8"]
    # Metrics older than that list: the first artifact measured is the reference, as before.
    assert list(evidence_from_metrics(METRICS, [], "earlier").accuracy) == ["fp32", "int8"]


def test_the_worst_group_drop_gate_is_sized_for_the_hardest_group(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\ngates:\n  max_int8_group_drop: {{limit: 0.02, mode: confidence}}\n")
    recipe = load_recipe(path)
    # beta drops most, but gamma, with four times the discordant pairs, is the one that is hard to resolve
    drops, discordance = (0.0, 0.012, 0.008, -0.004), (0.02, 0.02, 0.08, 0.02)
    evidence = dataclasses.replace(
        assumed_evidence(GROUPS), drift={"int8": Drift("fp32", 0.004, discordance, drops)}, drift_design_effect=1.0
    )
    (gate,) = [g for g in plan_benchmark(recipe, evidence).gates if g.key == "max_int8_group_drop"]
    assert (gate.artifact, gate.estimate, gate.margin) == ("int8", 0.012, pytest.approx(0.008))

    def every_group_inside(n: int) -> bool:
        return all(Z * math.sqrt(q / n) < 0.02 - d for d, q in zip(drops, discordance, strict=True))

    needed = gate.pairs_needed
    assert every_group_inside(needed) and not every_group_inside(needed - 20)
    # gamma decides: beta alone would need far fewer pairs
    assert needed > 20 * math.ceil(Z**2 * 0.02 / 0.008**2 / 20)
    # a group already beyond the limit is shown failing once its own interval clears it
    failing = dataclasses.replace(evidence, drift={"int8": Drift("fp32", 0.01, discordance, (0.0, 0.03, 0.0, 0.0))})
    (gate,) = [g for g in plan_benchmark(recipe, failing).gates if g.key == "max_int8_group_drop"]
    assert gate.pairs_needed == 20 * math.ceil(Z**2 * 0.02 / 0.01**2 / 20)
