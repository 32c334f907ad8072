"""Release gates as rules over artifact records, on a synthetic validation (no build)."""

from __future__ import annotations

from factory.recipe import GatesConfig
from factory.release.gates import evaluate_gates, failure_message
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
