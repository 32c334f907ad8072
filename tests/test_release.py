"""The release's parts on their own: operating thresholds, input licences and the model card (no build)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from factory.recipe import load_recipe
from factory.recipe.inputs import licence_record, supplied_inputs
from factory.release.model_card import render_model_card
from factory.release.thresholds import operating_thresholds

ROOT = Path(__file__).resolve().parents[1]


def test_operating_thresholds_are_set_globally_and_per_group_where_supported(tmp_path: Path) -> None:
    # Group a: 4,000 impostor pairs (supports FMR 1e-3, not 1e-4); group b: 100 (supports neither).
    rng = np.random.default_rng(0)
    imp_a, imp_b = rng.uniform(-0.2, 0.6, 4000), rng.uniform(-0.2, 0.9, 100)
    scores = np.r_[imp_a, imp_b, np.full(50, 0.95)]
    issame = np.r_[np.zeros(4100, bool), np.ones(50, bool)]
    groups = np.r_[np.zeros(4000, int), np.ones(100, int), np.zeros(50, int)]
    np.savez(tmp_path / "benchmark.npz", issame=issame, groups=groups, group_names=np.array(["a", "b"]))
    np.savez(tmp_path / "d.npz", model=(1.0 - scores) * 2.0)  # squared distances of unit vectors: d = 2 - 2 cos
    out = operating_thresholds(tmp_path / "d.npz", tmp_path / "benchmark.npz", ["model"])
    at = out["artifacts"]["model"]["1e-03"]
    impostors = np.r_[imp_a, imp_b]
    # the lowest threshold with at most floor(1e-3 * 4100) = 4 impostors at or above it
    assert at["threshold"] == pytest.approx(np.nextafter(np.sort(impostors)[::-1][4], math.inf))
    assert at["supported"] and at["impostors"] == 4100
    group_a = at["groups"]["a"]
    assert group_a["supported"] and group_a["threshold"] == pytest.approx(np.nextafter(np.sort(imp_a)[::-1][4], 1))
    group_b = at["groups"]["b"]
    assert not group_b["supported"] and "rule of 3" in group_b["unsupported"] and "group 'b'" in group_b["unsupported"]
    assert not out["artifacts"]["model"]["1e-04"]["supported"]  # 4,100 impostors cannot back 1e-4 (needs 30,000)
    assert "cosine" in out["score"]


def test_supplied_inputs_and_their_declared_licences(tmp_path: Path) -> None:
    (tmp_path / "backbone.pth").write_bytes(b"")
    (tmp_path / "groups.csv").write_text("x,alpha\n")
    (tmp_path / "r.yaml").write_text(
        "teacher:\n  checkpoint: backbone.pth\n  model: iresnet_nano\n"
        "distill:\n  source: {kind: files, path: backbone.pth, group_mapping: groups.csv}\n"
        "release:\n  licences:\n    teacher: {licence: MIT, commercial: true, url: https://example.org}\n"
    )
    recipe = load_recipe(tmp_path / "r.yaml")
    # a group mapping is the user's own settings, not a licensed input
    assert list(supplied_inputs(recipe)) == ["teacher.checkpoint", "distill.source.path"]
    record = licence_record(recipe)
    assert record["commercial_use"] is False and record["model_licence"] == "other"
    assert record["inputs"]["teacher.checkpoint"]["licence"] == {
        "licence": "MIT",
        "commercial": True,
        "url": "https://example.org",
    }  # declared on `teacher`, which covers the keys under it
    assert record["inputs"]["distill.source.path"] == {"path": str(tmp_path / "backbone.pth"), "licence": None}


def test_the_paper_recipes_are_declared_research_only(capsys: pytest.CaptureFixture) -> None:
    from factory.cli import main

    for name in ("synthdistill", "qud", "mixed_kd", "mst_kd"):
        with pytest.raises(SystemExit) as done:
            main(["check", str(ROOT / "recipes" / "paper" / f"{name}.yaml"), "--set", "release.commercial_use=true"])
        assert done.value.code == 2
        out = capsys.readouterr()
        lines = (out.out + out.err).splitlines()
        refusals = [x for x in lines if "does not allow commercial use, and release.commercial_use is true" in x]
        assert refusals and all(": release.licences." in x for x in refusals), lines


def card_facts(procedural: bool) -> dict:
    groups = ["alpha", "beta"]
    evaluation = {
        "groups": {
            g: {"accuracy_mean": a, "ci": [a - 0.01, a + 0.01]} for g, a in zip(groups, (0.9, 0.8), strict=True)
        },
        "fairness": {"mean": 0.85, "std": 0.0707, "ser": 2.0, "ci": {"mean": [0.84, 0.86], "std": [0.05, 0.09]}},
        "uncertainty": {"level": 0.95},
    }
    threshold = {"threshold": 0.31, "supported": True, "groups": {}}
    return {
        "name": "toy",
        "version": "1.0.0",
        "description": "A toy.",
        "intended_use": "",
        "licence": "apache-2.0",
        "student": "tinyfar_c",
        "params": 1_832_106,
        "teachers": "teacher `iresnet_nano`",
        "teacher_lineage": "teacher: iresnet_nano (12 steps)",
        "steps": 12,
        "data": "online procedural faces",
        "procedural": procedural,
        "benchmark": "RFW: 24,000 pairs",
        "groups": groups,
        "artifacts": {
            "onnx_int8": {"runtime": "onnxruntime", "precision": "int8", "files": ["m.onnx"], "size_mb": 3.1}
        },
        "validation": {
            "order": ["onnx_int8"],
            "groups": groups,
            "artifacts": {"onnx_int8": {"evaluation": evaluation}},
        },
        "thresholds": {"artifacts": {"onnx_int8": {"1e-03": threshold, "1e-04": {**threshold, "supported": False}}}},
        "targets": {
            "pi": {"runtime": "onnxruntime", "artifacts": {"onnx_int8": {"accuracy_mean": 0.84, "latency_ms": 9.5}}}
        },
        "licences": {
            "commercial_use": False,
            "model_licence": "apache-2.0",
            "inputs": {
                "data.benchmark": {"path": "/rfw", "licence": {"licence": "RFW", "commercial": False, "url": ""}}
            },
        },
        "gates": "9/9 gates passed",
        "plots": ["fairness.png", "ledger.png"],
    }


def test_the_model_card_has_the_hugging_face_shape_and_says_what_it_rests_on() -> None:
    card = render_model_card(card_facts(procedural=True))
    _, front, body = card.split("---", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "apache-2.0" and "face-verification" in meta["tags"]
    (result,) = meta["model-index"][0]["results"]
    assert {"type": "accuracy", "value": 85.0, "name": "mean group accuracy (onnx_int8)"} in result["metrics"]
    sections = [line[3:] for line in body.splitlines() if line.startswith("## ")]
    assert sections == [
        "Model details",
        "Intended use",
        "Factors",
        "Metrics",
        "Training data",
        "Evaluation data",
        "Quantitative analyses",
        "Ethical considerations",
        "Caveats and recommendations",
        "Licences of the inputs",
    ]
    assert "| `onnx_int8` | 90.00 ±1.00 | 80.00 ±1.00 | 85.00 ±1.00 | 7.07 [5.00, 9.00] | 2.00 |" in body
    assert "![per-group accuracy of every artifact](fairness.png)" in body and "fmr_heatmap.png" not in body
    assert "| `onnx_int8` | 0.3100 | 0.3100 (unsupported: too few impostor pairs) |" in body
    assert "| pi | onnxruntime | `onnx_int8` | 84.00 | 9.50 |" in body
    assert "| `data.benchmark` | /rfw | RFW | no |" in body
    assert "**This model was trained and evaluated only on procedural faces**" in body
    assert "procedural faces**" not in render_model_card(card_facts(procedural=False))
