"""Release gates as rules over artifact records, on a synthetic validation (no build): point and confidence modes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from factory.recipe import GatesConfig, load_recipe
from factory.recipe.schema import GateSpec, GoalSpec, LatencyGateSpec
from factory.release.gates import (
    FAIL,
    PASS,
    UNRESOLVED,
    GateResult,
    decide,
    evaluate_gates,
    failure_message,
    format_gate_table,
    gate_summary,
)
from factory.runtime.artifacts import Artifact


def entry(mean: float, std: float | None, ms: float | None = None) -> dict:
    out: dict = {"evaluation": {"fairness": {"mean": mean, "std": std}}}
    if ms is not None:
        out["latency"] = {"median_ms": ms}
    return out


ARTIFACTS = [
    Artifact("teacher", ("t.pt",), "torch", reference=True),
    Artifact("student", ("s.pt",), "torch", derived_from="teacher"),
    Artifact("fp32_file", ("s.onnx",), "onnxruntime", derived_from="student", golden_min_cosine=0.9999),
    Artifact("int8_a", ("a.xml", "a.bin"), "openvino", "int8", derived_from="fp32_file", golden_min_cosine=0.99),
    Artifact("int8_b", ("b.onnx",), "onnxruntime", "int8", derived_from="fp32_file", golden_min_cosine=0.99),
]
METRICS = {
    "order": [a.name for a in ARTIFACTS],
    "artifacts": {
        "teacher": entry(0.50, 0.20),  # far below every limit: a reference is never gated
        "student": entry(0.90, 0.02, ms=30.0),  # not shipped: no latency gate even though it was timed
        "fp32_file": entry(0.90, 0.02, ms=2.0),
        "int8_a": entry(0.895, 0.03, ms=1.0),
        "int8_b": entry(0.86, None, ms=12.0),
    },
}


def test_every_rule_picks_its_artifacts_from_their_records() -> None:
    cfg = GatesConfig(min_accuracy=0.85, max_std=0.05, max_int8_drop=0.01, max_latency_ms=10.0)
    rows = evaluate_gates(cfg, METRICS, ARTIFACTS)
    table = [(r.artifact, r.gate, r.passed) for r in rows]
    assert table == [
        ("student", "mean accuracy", True),
        ("student", "accuracy STD", True),
        ("fp32_file", "mean accuracy", True),
        ("fp32_file", "accuracy STD", True),
        ("fp32_file", "latency ms (b1)", True),
        ("int8_a", "mean accuracy", True),
        ("int8_a", "accuracy STD", True),
        ("int8_a", "latency ms (b1)", True),
        ("int8_b", "mean accuracy", True),
        ("int8_b", "accuracy STD (n/a)", False),  # unmeasurable fails, it never passes by default
        ("int8_b", "latency ms (b1)", False),
        # Each INT8 artifact against the FP32 artifact it was quantized from.
        ("int8_a", "INT8 drop vs FP32", True),
        ("int8_b", "INT8 drop vs FP32", False),
    ]
    drop_b = next(r for r in rows if r.artifact == "int8_b" and "drop" in r.gate)
    assert abs(drop_b.value - 0.04) < 1e-12 and drop_b.limit == 0.01
    assert "gate failed: int8_b INT8 drop vs FP32 = 0.04 (limit <= 0.01)" in failure_message(rows)


def test_a_gate_left_out_of_the_recipe_checks_nothing() -> None:
    rows = evaluate_gates(GatesConfig(min_accuracy=None, max_std=None, max_int8_drop=None), METRICS, ARTIFACTS)
    assert {(r.artifact, r.gate) for r in rows} == {
        (name, "latency ms (b1)") for name in ("fp32_file", "int8_a", "int8_b")
    }


def test_an_int8_artifact_without_a_measured_parent_fails_its_drop_gate() -> None:
    orphan = [*ARTIFACTS[:2], Artifact("int8_c", ("c.xml", "c.bin"), "openvino", "int8", derived_from="gone")]
    metrics = {
        "order": ["teacher", "student", "int8_c"],
        "artifacts": {**METRICS["artifacts"], "int8_c": entry(0.9, 0.01)},
    }
    (row,) = [r for r in evaluate_gates(GatesConfig(), metrics, orphan) if "drop" in r.gate]
    assert not row.passed and row.gate.endswith("(n/a)")


# --------------------------------------------------------------------------------------------------------------
# Gates that know their uncertainty: point and confidence modes, not-resolvable outcomes, the table and messages
# --------------------------------------------------------------------------------------------------------------


def measured(mean: float, mean_ci: list, std: float, std_ci: list | None, ms: float | None = None, ms_ci=None) -> dict:
    """A validation entry with the intervals the validate stage writes (fractions; latency in ms)."""
    out: dict = {
        "evaluation": {
            "fairness": {"mean": mean, "std": std, "ci": {"mean": mean_ci, "std": std_ci, "ser": [1.1, "inf"]}},
            "uncertainty": {"level": 0.95, "replicates": 1000, "seed": 0, "unit": "subject"},
        }
    }
    if ms is not None:
        out["latency"] = {"median_ms": ms, "median_ci": ms_ci}
    return out


def paired(against: str, delta: float, ci: list) -> dict:
    return {"against": against, "level": 0.95, "mean": {"delta": delta, "ci": ci}, "std": None, "groups": {}}


LINEAGE = [
    Artifact("teacher", ("t.pt",), "torch", reference=True),
    Artifact("fp32", ("s.onnx",), "onnxruntime", derived_from="teacher", golden_min_cosine=0.9999),
    Artifact("int8", ("a.xml", "a.bin"), "openvino", "int8", derived_from="fp32", golden_min_cosine=0.99),
]


def lineage_metrics(drop_ci: list, against: str = "fp32") -> dict:
    return {
        "order": ["teacher", "fp32", "int8"],
        "artifacts": {
            "teacher": measured(0.90, [0.89, 0.91], 0.02, [0.01, 0.03]),
            "fp32": measured(0.8862, [0.8750, 0.8970], 0.0345, [0.0231, 0.0492], 2.05, [1.98, 2.11]),
            "int8": measured(0.8729, [0.8610, 0.8840], 0.0401, [0.0270, 0.0560], 1.61, [1.58, 1.66]),
        },
        # delta = int8 minus fp32: the drop is its negative (0.0133), with the bounds swapped
        "comparisons": {"int8": paired(against, -0.0133, [-b for b in reversed(drop_ci)])},
    }


def rows_of(gates: GatesConfig, metrics: dict) -> dict[tuple[str, str], GateResult]:
    return {(r.artifact, r.key): r for r in evaluate_gates(gates, metrics, LINEAGE)}


CONFIDENCE = GateSpec(0.0, mode="confidence")  # decide() only reads mode and unresolvable
LENIENT = GateSpec(0.0, mode="confidence", unresolvable="pass")
POINT = GateSpec(0.0, mode="point")


@pytest.mark.parametrize(
    ("value", "interval", "limit", "comparison", "spec", "expected"),
    [
        # <= gates: the upper bound must be inside to pass, the lower bound outside to fail
        (0.03, (0.02, 0.04), 0.05, "<=", CONFIDENCE, (PASS, True, False)),
        (0.03, (0.02, 0.05), 0.05, "<=", CONFIDENCE, (PASS, True, False)),  # inclusive, like the point check
        (0.07, (0.06, 0.08), 0.05, "<=", CONFIDENCE, (FAIL, False, False)),
        (0.05, (0.05, 0.08), 0.05, "<=", CONFIDENCE, (UNRESOLVED, False, True)),  # not shown above the limit
        (0.04, (0.03, 0.06), 0.05, "<=", CONFIDENCE, (UNRESOLVED, False, True)),
        (0.04, (0.03, 0.06), 0.05, "<=", LENIENT, (UNRESOLVED, True, True)),
        (0.07, (0.03, 0.09), 0.05, "<=", LENIENT, (UNRESOLVED, True, True)),  # the point estimate does not matter
        # >= gates: the lower bound must be inside to pass, the upper bound outside to fail
        (0.88, (0.86, 0.90), 0.85, ">=", CONFIDENCE, (PASS, True, False)),
        (0.83, (0.82, 0.84), 0.85, ">=", CONFIDENCE, (FAIL, False, False)),
        (0.86, (0.84, 0.88), 0.85, ">=", CONFIDENCE, (UNRESOLVED, False, True)),
        # point mode decides by the estimate and only marks a straddling interval
        (0.04, (0.03, 0.06), 0.05, "<=", POINT, (PASS, True, True)),
        (0.06, (0.04, 0.07), 0.05, "<=", POINT, (FAIL, False, True)),
        (0.03, (0.02, 0.04), 0.05, "<=", POINT, (PASS, True, False)),
        (0.04, None, 0.05, "<=", POINT, (PASS, True, False)),
        # confidence without an interval cannot be checked: it fails, whatever `unresolvable` says
        (0.01, None, 0.05, "<=", LENIENT, (FAIL, False, False)),
    ],
)
def test_decide(value: float, interval, limit: float, comparison: str, spec: GateSpec, expected: tuple) -> None:
    assert decide(value, interval, limit, comparison, spec) == expected


def test_a_bare_number_is_a_point_gate_with_its_interval_shown() -> None:
    metrics = lineage_metrics(drop_ci=[0.0042, 0.0231])
    bare = evaluate_gates(GatesConfig(min_accuracy=0.85, max_std=0.05, max_int8_drop=0.01), metrics, LINEAGE)
    spelled = GatesConfig(
        min_accuracy=GateSpec(0.85, "point"),
        max_std=GateSpec(0.05, "point"),
        max_int8_drop=GateSpec(0.01, "point"),
        max_latency_ms=LatencyGateSpec(50.0, "point"),
    )
    assert bare == evaluate_gates(spelled, metrics, LINEAGE)
    rows = {(r.artifact, r.key): r for r in bare}
    std = rows["int8", "max_std"]
    assert (std.mode, std.outcome, std.passed, std.straddles) == ("point", PASS, True, True)
    assert std.interval == [0.027, 0.056] and std.level == 0.95
    drop = rows["int8", "max_int8_drop"]
    assert (drop.outcome, drop.straddles) == (FAIL, True) and abs(drop.value - 0.0133) < 1e-12
    assert drop.interval == pytest.approx([0.0042, 0.0231])


@pytest.mark.parametrize(
    ("drop_ci", "unresolvable", "outcome", "passed"),
    [
        ([0.0112, 0.0201], "fail", FAIL, False),  # shown real and above the limit
        ([0.0042, 0.0100], "fail", PASS, True),  # shown within the limit
        ([0.0042, 0.0231], "fail", UNRESOLVED, False),
        ([0.0042, 0.0231], "pass", UNRESOLVED, True),
        ([-0.0030, 0.0231], "pass", UNRESOLVED, True),  # not even shown to be a drop
    ],
)
def test_drift_gate_in_confidence_mode_uses_the_paired_interval(
    drop_ci: list, unresolvable: str, outcome: str, passed: bool
) -> None:
    only = GateSpec(0.01, unresolvable=unresolvable)
    gates = GatesConfig(min_accuracy=None, max_std=None, max_int8_drop=only, max_latency_ms=None)
    (row,) = evaluate_gates(gates, lineage_metrics(drop_ci), LINEAGE)
    assert (row.artifact, row.gate, row.mode) == ("int8", "INT8 drop vs FP32", "confidence")
    assert (row.outcome, row.passed) == (outcome, passed)
    assert row.interval == pytest.approx(drop_ci)


def test_a_comparison_with_another_artifact_is_not_the_drop_interval() -> None:
    # The drop gate compares with the recorded parent; a comparison against anything else does not count.
    metrics = lineage_metrics([0.0042, 0.0100], against="teacher")
    confidence = rows_of(GatesConfig(max_int8_drop=GateSpec(0.01, unresolvable="pass")), metrics)[
        "int8", "max_int8_drop"
    ]
    assert confidence.interval is None and (confidence.outcome, confidence.passed) == (FAIL, False)
    point = rows_of(GatesConfig(max_int8_drop=0.02), metrics)["int8", "max_int8_drop"]
    assert point.interval is None and point.passed


def test_confidence_gates_on_every_interval() -> None:
    gates = GatesConfig(
        min_accuracy=GateSpec(0.87),
        max_std=GateSpec(0.05),
        max_int8_drop=GateSpec(0.01, unresolvable="pass"),
        max_latency_ms=LatencyGateSpec(2.0),
    )
    rows = rows_of(gates, lineage_metrics([0.0042, 0.0231]))
    assert {k: (r.outcome, r.passed) for k, r in rows.items()} == {
        ("fp32", "min_accuracy"): (PASS, True),  # [87.50, 89.70] clears 87 %
        ("fp32", "max_std"): (PASS, True),  # [2.31, 4.92] under 5
        ("fp32", "max_latency_ms"): (UNRESOLVED, False),  # [1.98, 2.11] ms holds 2 ms
        ("int8", "min_accuracy"): (UNRESOLVED, False),  # [86.10, 88.40] holds 87 %
        ("int8", "max_std"): (UNRESOLVED, False),  # [2.70, 5.60] holds 5
        ("int8", "max_latency_ms"): (PASS, True),
        ("int8", "max_int8_drop"): (UNRESOLVED, True),  # recipe: unresolvable passes
    }


def test_gate_table_and_failure_message() -> None:
    gates = GatesConfig(
        min_accuracy=0.85, max_std=GateSpec(0.05), max_int8_drop=GateSpec(0.01, unresolvable="pass"), max_latency_ms=10
    )
    rows = evaluate_gates(gates, lineage_metrics([0.0042, 0.0231]), LINEAGE)
    assert format_gate_table(rows).splitlines() == [
        "artifact  gate               mode                   value [CI]      limit  result",
        "-" * len("int8      accuracy STD       confidence     4.01% [2.70, 5.60]   <= 5.00%  not resolvable: FAIL"),
        "fp32      mean accuracy      point       88.62% [87.50, 89.70]  >= 85.00%  pass",
        "fp32      accuracy STD       confidence     3.45% [2.31, 4.92]   <= 5.00%  pass",
        "fp32      latency ms (b1)    point           2.05 [1.98, 2.11]   <= 10.00  pass",
        "int8      mean accuracy      point       87.29% [86.10, 88.40]  >= 85.00%  pass",
        "int8      accuracy STD       confidence     4.01% [2.70, 5.60]   <= 5.00%  not resolvable: FAIL",
        "int8      latency ms (b1)    point           1.61 [1.58, 1.66]   <= 10.00  pass",
        "int8      INT8 drop vs FP32  confidence     1.33% [0.42, 2.31]   <= 1.00%  not resolvable: pass",
        "[ ] 95% intervals; a confidence gate needs the interval inside the limit; `factory data plan RECIPE` sizes "
        "the benchmark that resolves the rest",
    ]
    assert failure_message(rows) == (
        "gate failed: int8 accuracy STD = 0.0401 (limit <= 0.05): not resolvable: 95% CI [0.027, 0.056] straddles the "
        "limit, and gates.max_std fails then; `factory data plan RECIPE` says how many benchmark pairs per group "
        "resolve it"
    )
    point = evaluate_gates(
        GatesConfig(max_std=None, max_int8_drop=0.01, min_accuracy=None), lineage_metrics([0.0042, 0.0231]), LINEAGE
    )
    table = format_gate_table(point)
    assert "int8      INT8 drop vs FP32  point  1.33% [0.42, 2.31]  <= 1.00%  FAIL (CI straddles limit)" in table
    assert failure_message(point) == (
        "gate failed: int8 INT8 drop vs FP32 = 0.0133 (limit <= 0.01); 95% CI [0.0042, 0.0231], which straddles "
        "the limit"
    )
    above = evaluate_gates(GatesConfig(max_std=GateSpec(0.02)), lineage_metrics([0.0, 0.01]), LINEAGE)
    assert (
        "gate failed: int8 accuracy STD = 0.0401 (limit <= 0.02): its 95% CI [0.027, 0.056] lies wholly above the limit"
        in failure_message(above)
    )


def test_rows_survive_json_and_older_records_read_back() -> None:
    rows = evaluate_gates(GatesConfig(max_std=GateSpec(0.05)), lineage_metrics([0.0042, 0.0231]), LINEAGE)
    assert [GateResult(**r.to_dict()) for r in rows] == rows
    # A release.failed.json or cached release metrics written before intervals existed.
    old = GateResult(
        **{"artifact": "a", "gate": "accuracy STD", "value": 0.06, "limit": 0.05, "comparison": "<=", "passed": False}
    )
    assert (old.outcome, old.mode, old.interval) == (FAIL, "point", None)
    assert format_gate_table([old]).splitlines()[2] == "a         accuracy STD  point       6.00%  <= 5.00%  FAIL"


def test_unmeasurable_std_fails_in_either_mode() -> None:
    metrics = lineage_metrics([0.0042, 0.0231])
    metrics["artifacts"]["int8"]["evaluation"]["fairness"].update(std=None, ci={"mean": [0.86, 0.88], "std": None})
    for spec in (0.05, GateSpec(0.05, unresolvable="pass")):
        row = rows_of(GatesConfig(max_std=spec), metrics)["int8", "max_std"]
        assert row.gate == "accuracy STD (n/a)" and not row.passed and math.isnan(row.value)


def test_gate_mappings_from_a_recipe(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "gates:\n  max_std: {limit: 0.05}\n  max_int8_drop: {limit: 0.01, unresolvable: pass}\n"
        "  min_accuracy: {limit: 0.85, mode: point}\n  max_latency_ms: 12\n"
    )
    gates = load_recipe(path).gates
    assert gates.max_std == GateSpec(0.05, "confidence", None)  # the mapping form defaults to confidence
    assert gates.max_int8_drop == GateSpec(0.01, "confidence", "pass")
    assert gates.min_accuracy == GateSpec(0.85, "point") and gates.max_latency_ms == 12.0
    overridden = load_recipe(path, ["gates.max_std.mode=point", "gates.max_int8_drop=0.02"]).gates
    assert overridden.max_std == GateSpec(0.05, "point") and overridden.max_int8_drop == 0.02
    rows = rows_of(gates, lineage_metrics([0.0042, 0.0231]))
    assert (rows["int8", "max_std"].outcome, rows["int8", "max_int8_drop"].passed) == (UNRESOLVED, True)


def test_the_one_line_summary_counts_unresolved_passes_apart() -> None:
    gates = GatesConfig(max_std=GateSpec(0.06), max_int8_drop=GateSpec(0.01, unresolvable="pass"))
    rows = [r.to_dict() for r in evaluate_gates(gates, lineage_metrics([0.0042, 0.0231]), LINEAGE)]
    assert gate_summary(rows) == "7/7 gates passed (1 not resolvable, let through by the recipe)"
    old = [{"passed": True}, {"passed": False}]  # rows recorded before outcomes existed
    assert gate_summary(old) == "1/2 gates passed"


def test_int8_cosine_floors_read_the_compress_drift_in_the_record() -> None:
    moved = [{"layer": "conv_7", "cosine": 0.91, "input_cosine": 0.995, "added": 0.085}]
    drift = {"against": "fp32", "mean_cosine": 0.9965, "p1_cosine": 0.978, "n": 800, "layers_moved_most": moved}
    lineage = [
        *LINEAGE[:2],
        Artifact("int8", ("a.xml", "a.bin"), "openvino", "int8", derived_from="fp32", parity=drift),
    ]
    gates = GatesConfig(
        min_accuracy=None, max_std=None, max_int8_drop=None, min_int8_cosine=0.995, min_int8_p1_cosine=0.98
    )
    rows = {r.key: r for r in evaluate_gates(gates, lineage_metrics([0.0, 0.02]), lineage)}
    assert set(rows) == {"min_int8_cosine", "min_int8_p1_cosine", "max_latency_ms"}  # FP32 artifacts: no cosine gate
    assert (rows["min_int8_cosine"].value, rows["min_int8_cosine"].passed) == (0.9965, True)
    assert (rows["min_int8_p1_cosine"].value, rows["min_int8_p1_cosine"].passed) == (0.978, False)
    table = format_gate_table(list(rows.values()))
    assert "0.9780" in table and ">= 0.9800" in table and "97.80%" not in table  # a cosine is not a percentage
    # The failing floor says where to look; the passing one carries nothing.
    assert rows["min_int8_cosine"].detail == ""
    assert failure_message(list(rows.values())).splitlines() == [
        "gate failed: int8 INT8 cosine to FP32 (1st pct) = 0.978 (limit >= 0.98)",
        "  layers the quantization moved most (cosine to FP32, from their inputs'): conv_7 0.9100 (from 0.9950)",
    ]
    # An INT8 artifact whose compressor measured no drift cannot be checked: the gate fails.
    unmeasured = {r.key: r for r in evaluate_gates(gates, lineage_metrics([0.0, 0.02]), LINEAGE)}
    assert not unmeasured["min_int8_cosine"].passed and unmeasured["min_int8_cosine"].gate.endswith("(n/a)")


def group_comparison(drops: dict[str, tuple[float, float, float]]) -> dict:
    """A paired comparison with the parent whose per-group deltas are minus the given (drop, low, high)."""
    groups = {g: {"delta": -d, "ci": [-high, -low]} for g, (d, low, high) in drops.items()}
    return {**paired("fp32", -0.01, [-0.02, 0.0]), "groups": groups}


@pytest.mark.parametrize(
    ("drops", "spec", "expected"),
    [
        # every group shown within 0.02: pass; the value is the largest point drop
        ({"a": (0.010, 0.000, 0.015), "b": (0.005, -0.01, 0.019)}, GateSpec(0.02), (0.010, [0.0, 0.019], PASS)),
        # one group shown beyond the limit fails the gate, whatever the others do
        ({"a": (0.030, 0.025, 0.040), "b": (0.0, -0.01, 0.01)}, GateSpec(0.02), (0.030, [0.025, 0.04], FAIL)),
        # one group's interval holds the limit: not resolvable
        ({"a": (0.015, 0.005, 0.030), "b": (0.0, -0.01, 0.01)}, GateSpec(0.02), (0.015, [0.005, 0.03], UNRESOLVED)),
        # point mode: the largest point drop against the limit
        ({"a": (0.025, 0.005, 0.030), "b": (0.0, -0.01, 0.01)}, GateSpec(0.02, "point"), (0.025, [0.005, 0.03], FAIL)),
    ],
)
def test_worst_group_drop_gate_is_shown_within_only_when_every_group_is(drops, spec, expected) -> None:
    metrics = lineage_metrics([0.0, 0.02])
    metrics["comparisons"]["int8"] = group_comparison(drops)
    gates = GatesConfig(min_accuracy=None, max_std=None, max_int8_drop=None, max_latency_ms=None)
    gates.max_int8_group_drop = spec
    (row,) = evaluate_gates(gates, metrics, LINEAGE)
    value, interval, outcome = expected
    assert row.gate == "INT8 worst group drop" and row.value == pytest.approx(value)
    assert row.interval == pytest.approx(interval) and row.outcome == outcome


def test_the_fairness_plot_fits_eleven_artifacts_without_a_warning_and_repeats_no_colour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    import matplotlib.pyplot as plt
    from matplotlib.image import imread

    from factory.release.stage import _plot_fairness

    names = [f"artifact_{i}" for i in range(11)]
    groups = ["alpha", "beta", "gamma", "delta"]
    evaluation = {g: {"accuracy_mean": 0.5 + 0.02 * i} for i, g in enumerate(groups)}
    validation = {
        "groups": groups,
        "order": names,
        "artifacts": {n: {"evaluation": {"groups": evaluation}} for n in names},
    }
    figures: list = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read its bars
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tight_layout's "not applied" warning when the legend was one wide row
        _plot_fairness(validation, tmp_path / "fairness.png")
    height, width = imread(tmp_path / "fairness.png").shape[:2]
    assert width < 1000 and height < 500  # the 8x4 inch figure at 100 dpi, the legend in rows beneath
    bars = figures[0].axes[0].containers
    assert len(bars) == 11 and len({tuple(b.patches[0].get_facecolor()) for b in bars}) == 11
    monkeypatch.undo()
    plt.close(figures[0])


# --------------------------------------------------------------------------------------------------------------
# Goals: any metric, on the build machine or a target, as a threshold or a degradation from another artifact
# --------------------------------------------------------------------------------------------------------------


def with_operating_point(metrics: dict) -> dict:
    """Adds per-group FMR/FNMR at the FMR 1e-3 threshold (int8 supported, fp32 not) and TAR@FAR to the lineage."""

    def block(fmr: dict, supported: bool) -> dict:
        why = None if supported else "rule of 3: 80 impostor pairs, which support FMR >= 3.7e-02 at best"
        mark = (lambda v: v) if supported else (lambda v: {"estimate": v, "unsupported": why})
        groups = {
            g: {"fmr": mark(f), "fmr_ci": mark([f / 2, 2 * f]), "fnmr": mark(0.1), "fnmr_ci": mark([0.05, 0.15])}
            for g, f in fmr.items()
        }
        summary = {"fmr_max_geomean": mark(1.6), "fnmr_max_geomean": mark("not estimable")}
        return {"1e-03": {"groups": groups, "summary": summary}}

    metrics["artifacts"]["fp32"]["evaluation"]["operational"] = block({"a": 0.001, "b": 0.002}, supported=False)
    metrics["artifacts"]["int8"]["evaluation"]["operational"] = block({"a": 0.0008, "b": 0.0012}, supported=True)
    metrics["artifacts"]["int8"]["evaluation"]["overall"] = {"tar_at_far": {"1e-03": {"tar": 0.91}}}
    return metrics


def goals(*specs: GoalSpec) -> GatesConfig:
    return GatesConfig(min_accuracy=None, max_std=None, max_int8_drop=None, max_latency_ms=None, goals=list(specs))


def test_goal_metrics_read_their_values_intervals_and_support() -> None:
    metrics = with_operating_point(lineage_metrics([0.0042, 0.0231]))
    metrics["artifacts"]["fp32"]["evaluation"]["fairness"]["ser"] = 1.4
    rows = evaluate_gates(
        goals(
            GoalSpec("fmr_max", threshold=0.005),
            GoalSpec("fmr_max_geomean", artifacts="int8", threshold=2.0),
            GoalSpec("fnmr_max_geomean", artifacts="int8", threshold=2.0),
            GoalSpec("tar_at_far", artifacts="int8", threshold=0.9),
            GoalSpec("ser", artifacts="fp32", threshold=4.0, mode="point"),
        ),
        metrics,
        LINEAGE,
    )
    got = {(r.artifact, r.key): r for r in rows}
    fmr = got["int8", "goals.0"]
    # the worst group, with the interval that decides for every group at once: [max of lows, max of highs]
    assert (fmr.gate, fmr.value, fmr.interval, fmr.mode) == (
        "max group FMR (threshold for FMR 1e-03)",
        0.0012,
        [0.0006, 0.0024],
        "confidence",
    )
    assert (fmr.outcome, fmr.passed, fmr.unit) == (PASS, True, "fraction")
    # fp32's figures are marked unsupported (too few impostors): not resolvable, whatever they say, failing
    unsupported = got["fp32", "goals.0"]
    assert (unsupported.outcome, unsupported.passed) == (UNRESOLVED, False)
    assert "rule of 3" in unsupported.detail and "the benchmark cannot support it" in failure_message(rows)
    geomean = got["int8", "goals.1"]
    assert (geomean.value, geomean.mode, geomean.unit, geomean.passed) == (1.6, "point", "ratio", True)
    assert got["int8", "goals.2"].gate.endswith("(n/a)") and "not estimable" in got["int8", "goals.2"].detail
    assert (got["int8", "goals.3"].value, got["int8", "goals.3"].passed) == (0.91, True)
    ser = got["fp32", "goals.4"]
    assert (ser.value, ser.interval, ser.passed, ser.unit) == (1.4, [1.1, math.inf], True, "ratio")
    table = format_gate_table(rows)
    assert "1.60" in table and "<= 2.00" in table and "160.00%" not in table  # a ratio is not a percentage


def test_a_degradation_is_measured_against_the_parent_or_a_named_artifact() -> None:
    metrics = lineage_metrics([0.0042, 0.0231])
    rows = evaluate_gates(
        goals(
            GoalSpec("accuracy", artifacts="all", against="teacher", max_degradation=0.02),
            GoalSpec("latency_ms", artifacts="int8", percent_max_degradation=10),
            GoalSpec("size_mb", artifacts="int8", percent_max_degradation=50),
        ),
        metrics,
        LINEAGE,
        sizes={"fp32": 8_000_000, "int8": 3_000_000},
    )
    got = {(r.artifact, r.key): r for r in rows}
    # 0.90 - 0.8862 points below the teacher; no paired comparison against the teacher: no interval, so the
    # default confidence mode fails it (a degradation is never passed on nothing)
    teacher = got["fp32", "goals.0"]
    assert teacher.gate == "mean accuracy: degradation vs teacher" and teacher.value == pytest.approx(0.0138)
    assert teacher.interval is None and not teacher.passed
    # latency got faster: a negative degradation, in percent of the parent's 2.05 ms, with bounds from both
    # intervals ([1.58, 1.66] against [1.98, 2.11]) scaled the same way
    latency = got["int8", "goals.1"]
    assert latency.value == pytest.approx(100 * (1.61 - 2.05) / 2.05) and latency.unit == "percent"
    assert latency.interval == pytest.approx([100 * (1.58 - 2.11) / 2.05, 100 * (1.66 - 1.98) / 2.05])
    assert latency.passed and latency.outcome == PASS
    size = got["int8", "goals.2"]
    assert (size.value, size.mode, size.passed) == (pytest.approx(-62.5), "point", True)
    assert "-62.50%" in format_gate_table(rows)


def test_the_named_gates_are_shorthands_for_goals() -> None:
    metrics = lineage_metrics([0.0042, 0.0231])
    named = evaluate_gates(
        GatesConfig(min_accuracy=GateSpec(0.87), max_latency_ms=None, max_std=None), metrics, LINEAGE
    )
    spelled = evaluate_gates(
        goals(
            GoalSpec("accuracy", artifacts="all", threshold=0.87),
            GoalSpec("accuracy", artifacts="int8", max_degradation=0.01, mode="point"),
        ),
        metrics,
        LINEAGE,
    )
    strip = ("gate", "key")
    assert [{k: v for k, v in r.to_dict().items() if k not in strip} for r in named] == [
        {k: v for k, v in r.to_dict().items() if k not in strip} for r in spelled
    ]


def test_a_goal_that_selects_nothing_fails_and_says_why() -> None:
    metrics = lineage_metrics([0.0042, 0.0231])
    rows = evaluate_gates(
        goals(
            GoalSpec("accuracy", artifacts="openvino_int8", threshold=0.5),
            GoalSpec("latency_ms", target="jetson", threshold=5.0),
        ),
        metrics,
        LINEAGE,
        targets={},
    )
    assert [(r.artifact, r.target, r.passed) for r in rows] == [
        ("openvino_int8", "", False),
        ("shipped", "jetson", False),
    ]
    message = failure_message(rows)
    assert "no built artifact is selected by 'openvino_int8' (built: fp32, int8)" in message
    assert "target jetson was not measured (deploy.targets lists none)" in message


def test_goals_on_a_target_read_its_measurements_and_share_one_table_with_the_build() -> None:
    metrics = lineage_metrics([0.0042, 0.0231])
    targets = {
        "pi": {
            "artifacts": {
                "int8": {
                    "accuracy": {"a": 0.86, "b": 0.88},
                    "accuracy_mean": 0.87,
                    "latency_by_batch": {"1": {"median_ms": 14.0, "median_ci": [13.0, 16.0]}},
                },
                "fp32": {"error": "not in the report"},
            }
        }
    }
    gates = goals(
        GoalSpec("latency_ms", target="pi", threshold=15.0),
        GoalSpec("group_accuracy", target="pi", threshold=0.85),
    )
    gates.max_latency_ms = 10.0
    rows = evaluate_gates(gates, metrics, LINEAGE, targets=targets)
    on_pi = [(r.artifact, r.target, r.gate, r.outcome) for r in rows if r.target]
    assert on_pi == [
        ("int8", "pi", "latency ms (b1)", UNRESOLVED),  # [13, 16] ms holds 15 ms
        ("int8", "pi", "worst group accuracy", PASS),  # 86 %, a point: the target measures no interval
    ]
    lines = format_gate_table(rows).splitlines()
    assert lines[0].split()[:3] == ["artifact", "target", "gate"]
    assert any(line.startswith("int8      build   latency ms (b1)") for line in lines)
    assert any(line.startswith("int8      pi      latency ms (b1)") for line in lines)
    assert "gate failed: int8 on pi latency ms (b1) = 14" in failure_message(rows)


def test_goals_from_a_recipe_and_their_checks(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "gates:\n  goals:\n"
        "    - {metric: fmr_max, at_fmr: 1e-4, threshold: 0.002}\n"
        "    - {metric: accuracy, artifacts: torch_fp32, against: teacher, percent_max_degradation: 5}\n"
    )
    recipe = load_recipe(path)
    first, second = recipe.gates.goals
    assert (first.metric, first.at_fmr, first.goal, first.limit) == ("fmr_max", 1e-4, "threshold", 0.002)
    assert (second.against, second.goal, second.limit) == ("teacher", "percent_max_degradation", 5.0)
    assert load_recipe(path, ["gates.goals.0.threshold=0.001"]).gates.goals[0].threshold == 0.001
