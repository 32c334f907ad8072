"""Recipes: strict schema, located errors, extends, overrides, and every shipped recipe validates."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from factory.cli import main
from factory.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def issues_of(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(RecipeError) as err:
        load_recipe(path, overrides)
    return [str(i) for i in err.value.issues]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name == path.stem


def test_defaults_and_name(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "mine.yaml", "seed: 3\n"))
    assert recipe.name == "mine" and recipe.seed == 3
    assert recipe.distill.student == "tinyfar_a"


def test_misspelled_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "seed: 1\nteacher:\n  modle: iresnet_nano\n")
    (issue,) = issues_of(path)
    assert issue.startswith(f"{path}:3: teacher.modle: unknown key (did you mean 'model'?")


def test_wrong_type_and_all_problems_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "seed: one\ndistill:\n  train:\n    steps: 1.5\n    optimizer: rmsprop\n")
    found = issues_of(path)
    assert found == [
        f"{path}:1: seed: got str 'one' (expected an integer)",
        f"{path}:4: distill.train.steps: got float 1.5 (expected an integer)",
        f"{path}:5: distill.train.optimizer: got 'rmsprop' (expected 'sgd' or 'adam' or 'adamw')",
    ]


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    (issue,) = issues_of(write(tmp_path, "r.yaml", "threads: true\n"))
    assert "threads: got bool True (expected an integer)" in issue


def test_extends_merges_and_locates_errors_in_the_fragment(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "seed: 5\ngates:\n  max_std: 0.1\n  min_acuracy: 0.9\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\ngates:\n  max_std: 0.02\n")
    (issue,) = issues_of(child)
    assert issue.startswith(f"{tmp_path / 'base.yaml'}:4: gates.min_acuracy: unknown key")
    write(tmp_path, "base.yaml", "seed: 5\ngates:\n  max_std: 0.1\n  min_accuracy: 0.9\n")
    recipe = load_recipe(child)
    assert (recipe.seed, recipe.gates.max_std, recipe.gates.min_accuracy) == (5, 0.02, 0.9)


def test_extends_missing_and_cycle(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "extends: nowhere.yaml\n")
    (issue,) = issues_of(path)
    assert issue.startswith(f"{path}:1: extends: ") and "nowhere.yaml not found" in issue
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    (issue,) = issues_of(tmp_path / "a.yaml")
    assert "cycle" in issue


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "distill:\n  train:\n    steps: 10\n")
    recipe = load_recipe(path, ["distill.train.steps=20", "gates.max_latency_ms=null", "release.version=2.0"])
    assert recipe.distill.train.steps == 20 and recipe.gates.max_latency_ms is None
    assert recipe.release.version == "2.0"
    (issue,) = issues_of(path, ["distill.train.stepz=5"])
    assert issue.startswith("--set:0: distill.train.stepz: unknown key (did you mean 'steps'?")


def test_missing_file_and_unknown_model(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "teacher:\n  checkpoint: missing.pt\ndistill:\n  student: tinyfar_x\n")
    found = issues_of(path)
    assert found[0].startswith(f"{path}:2: teacher.checkpoint: {tmp_path / 'missing.pt'} does not exist")
    assert found[1].startswith(f"{path}:4: distill.student: unknown model 'tinyfar_x': did you mean")


def test_code_in_yaml_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, "r.yaml", f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    (issue,) = issues_of(path)
    assert issue.startswith(f"{path}:1: name: ") and "plain data" in issue
    assert not marker.exists()


def test_bad_yaml_duplicate_key_and_range(tmp_path: Path) -> None:
    (issue,) = issues_of(write(tmp_path, "a.yaml", "seed: [1, 2\n"))
    assert "not valid YAML" in issue
    (issue,) = issues_of(write(tmp_path, "b.yaml", "seed: 1\nseed: 2\n"))
    assert issue.startswith(f"{tmp_path / 'b.yaml'}:2: seed: duplicate key")
    (issue,) = issues_of(write(tmp_path, "c.yaml", "data:\n  benchmark_pairs_per_group: 30\n"))
    assert "multiple of 20" in issue


def test_cli_check_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    good = write(tmp_path, "good.yaml", "seed: 1\n")
    ok = runner.invoke(main, ["check", str(good)])
    assert ok.exit_code == 0, ok.output
    bad = write(tmp_path, "bad.yaml", "seed: 1\ndistil:\n  steps: 3\n")
    res = runner.invoke(main, ["check", str(bad)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        f"{bad}:2: distil: unknown key (did you mean 'distill'? expected one of: name, seed, threads, run_dir, data, "
        "teacher, distill, export, compress, validate, gates, release)"
    ]
    missing = runner.invoke(main, ["check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "file not found" in missing.output
    resolved = runner.invoke(main, ["check", str(good), "--resolved", "--set", "seed=9"])
    assert resolved.exit_code == 0 and "seed: 9" in resolved.output
