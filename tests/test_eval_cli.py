"""`factory eval`: JSON schema, plots, and every bad-input case of the embeddings file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import procedural_bin

from factory.cli import main


def embeddings_file(path: Path, n: int = 200, with_groups: bool = True, **override: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    issame = np.tile([True, False], n // 2)
    emb = rng.normal(size=(2 * n, 32))
    emb[1::2][issame] = emb[0::2][issame] + 0.6 * rng.normal(size=(issame.sum(), 32))
    arrays = {"embeddings": emb, "issame": issame, "subjects": np.arange(2 * n) // 2}
    if with_groups:
        arrays["groups"] = np.array(["a", "b"])[np.arange(n) * 2 // n]
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["eval", *args])
    return result.exit_code, result.output


def test_embeddings_json_has_the_documented_keys(tmp_path: Path) -> None:
    code, out = run("--embeddings", str(embeddings_file(tmp_path / "e.npz")), "--json", "--bootstrap", "50")
    assert code == 0, out
    report = json.loads(out)
    assert 0.5 < report["overall"]["accuracy_mean"] <= 1 and "accuracy_std" in report["overall"]
    assert set(report["overall"]["tar_at_far"]["1e-03"]) == {"tar", "tar_std", "far", "supported"}
    assert set(report["groups"]) == {"a", "b"} and "accuracy_mean" in report["groups"]["a"]
    assert len(report["groups"]["a"]["ci"]) == 2 and report["uncertainty"]["replicates"] == 50
    assert {"std", "std_population", "ser", "ci"} <= set(report["fairness"])
    assert set(report["fairness"]["ci"]) == {"mean", "std", "ser"}
    block = report["operational"]["1e-03"]
    assert {"threshold", "groups", "summary", "supported"} <= set(block) and block["supported"] is False
    assert {"fmr", "fnmr", "fmr_ci", "fnmr_ci", "fmr_supported"} <= set(block["groups"]["a"])
    assert {"fmr_max_geomean", "fmr_max_min", "garbe", "fdr"} <= set(block["summary"])


def test_bad_embeddings_files_are_clear_errors(tmp_path: Path) -> None:
    cases = {
        "odd": dict(embeddings=np.ones((5, 4))),
        "mismatch": dict(issame=np.ones(3, bool)),
        "nan": dict(embeddings=np.full((400, 32), np.nan)),
        "empty": dict(embeddings=np.ones((0, 4)), issame=np.ones(0, bool), subjects=np.ones(0), groups=np.array([])),
        "noimpostor": dict(issame=np.ones(200, bool)),
    }
    expected = {
        "odd": "embeddings must be 2N×D",
        "mismatch": "400 embedding rows, 3 issame",
        "nan": "NaN or infinite",
        "empty": "empty benchmark",
        "noimpostor": "has no impostor pairs: its accuracy is not estimable",
    }
    for name, override in cases.items():
        code, out = run("--embeddings", str(embeddings_file(tmp_path / f"{name}.npz", **override)))
        assert code == 2 and expected[name] in out, (name, out)
    code, out = run("--embeddings", str(tmp_path / "none.npz"))
    assert code == 2 and "none.npz: no such embeddings file" in out


def test_eval_an_artifact_on_a_bin_with_plots(tmp_path: Path) -> None:
    from factory.export.onnx import export_onnx
    from factory.models.zoo import create_model

    procedural_bin(tmp_path / "tiny.bin", pairs=40)
    onnx_path = export_onnx(create_model("iresnet_nano").eval(), tmp_path / "m.onnx")
    code, out = run(str(tmp_path / "tiny.bin"), "--artifact", str(onnx_path), "--plots", str(tmp_path / "plots"))
    assert code == 0, out
    assert "tiny" in out and "FMR 1e-03" in out and "rule of 3" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["accuracy.png", "det.png", "histograms.png"]
    code, out = run(str(tmp_path / "tiny.bin"))
    assert code == 2 and "exactly one of --model/--artifact" in out


@pytest.mark.parametrize("line", ["a.png,b.png,maybe", "a.png,b.png"])
def test_pairs_list_errors_name_the_line(tmp_path: Path, line: str) -> None:
    (tmp_path / "pairs.csv").write_text(line + "\n")
    code, out = run(str(tmp_path / "pairs.csv"), "--model", "tinyfar_c")
    assert code == 2 and "pairs.csv:1: expected image1,image2,issame" in out
