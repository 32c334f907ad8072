"""Recipes: strict schema, located errors, extends, overrides, lists and tagged unions (on the toy schema of
recipe_toys), and every shipped recipe validates.
"""

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner
from recipe_toys import Book, Lamp, Poster, Row, Shelf

from factory.cli import main
from factory.recipe import RecipeError, load_recipe, loader

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


def test_a_written_section_changes_its_own_default_not_the_class_default(tmp_path: Path) -> None:
    # distill's train section defaults to Adam at 1e-3; writing one key of it must not fall back to SGD at 0.1
    recipe = load_recipe(write(tmp_path, "r.yaml", "distill:\n  train: {steps: 7}\n"))
    train = recipe.distill.train
    assert (train.steps, train.optimizer, train.lr, train.weight_decay) == (7, "adam", 1e-3, 0.0)
    assert load_recipe(write(tmp_path, "t.yaml", "teacher:\n  train: {steps: 7}\n")).teacher.train.optimizer == "sgd"


def test_extending_with_another_kind_replaces_the_section(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "distill:\n  method: {kind: feature_kd, normalize: true}\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\ndistill:\n  method: {kind: qud, queue_size: 8}\n")
    method = load_recipe(child).distill.method
    assert (method.kind, method.queue_size, method.temperature) == ("qud", 8, 0.1)
    same = write(tmp_path, "same.yaml", "extends: base.yaml\ndistill:\n  method: {kind: feature_kd, loss: mse}\n")
    assert load_recipe(same).distill.method.normalize is True  # same kind: merged key by key, as any section


def test_setting_another_kind_starts_the_section_afresh(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "distill:\n  source: {kind: procedural, sampling: dynamic}\n")
    (tmp_path / "faces").mkdir()
    recipe = load_recipe(base, ["distill.source.kind=files", f"distill.source.path={tmp_path / 'faces'}"])
    assert (recipe.distill.source.kind, recipe.distill.source.path) == ("files", str(tmp_path / "faces"))
    assert load_recipe(base, ["distill.source.kind=procedural"]).distill.source.sampling == "dynamic"


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


def test_training_schedule_settings(tmp_path: Path) -> None:
    """The papers' settings read as written: QUD's x0.1 milestones with Nesterov SGD, MST-KD's clip, SynthDistill's
    halving; ``gamma`` and the milestones can be set from the command line too."""
    text = (
        "teacher:\n  train: {steps: 260, schedule: multistep, milestones: [80, 140, 200, 250], nesterov: true,"
        " grad_clip_norm: 5, tensorboard: false}\n"
        "distill:\n  train: {optimizer: adam, lr: 1e-3, schedule: step, step_every: 100}\n"
    )
    recipe = load_recipe(write(tmp_path, "r.yaml", text))
    teacher, distill = recipe.teacher.train, recipe.distill.train
    assert (teacher.milestones, teacher.gamma, teacher.nesterov) == ([80, 140, 200, 250], None, True)
    assert (teacher.grad_clip_norm, teacher.tensorboard) == (5.0, False)
    assert (distill.schedule, distill.gamma, distill.tensorboard) == ("step", None, True)
    overrides = ["distill.train.schedule=multistep", "distill.train.milestones=[300, 600]", "distill.train.gamma=0.2"]
    distill = load_recipe(tmp_path / "r.yaml", overrides).distill.train
    assert (distill.schedule, distill.milestones, distill.gamma) == ("multistep", [300, 600], 0.2)


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
    assert issue.startswith("--set distill.train.stepz=5: distill.train.stepz: unknown key (did you mean 'steps'?")


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
        "teacher, distill, export, compress, validate, gates, deploy, release)"
    ]
    missing = runner.invoke(main, ["check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "file not found" in missing.output
    resolved = runner.invoke(main, ["check", str(good), "--resolved", "--set", "seed=9"])
    assert resolved.exit_code == 0 and "seed: 9" in resolved.output


# --------------------------------------------------------------------------------------------------------------
# Lists and tagged unions, on the toy schema of recipe_toys (the real schema has neither yet)
# --------------------------------------------------------------------------------------------------------------

TOY_KINDS = "book, lamp, poster"


@pytest.fixture
def shelf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(loader.UNION_FAMILIES, "toy", ("recipe_toys", "TOYS"))
    monkeypatch.setitem(loader.UNION_FAMILIES, "broken", ("recipe_toys", "BROKEN"))
    monkeypatch.setattr(loader, "Recipe", Shelf)


def test_lists_of_scalars_and_dataclasses(tmp_path: Path, shelf: None) -> None:
    path = write(tmp_path, "r.yaml", "sizes: [1, 2]\nrows:\n  - label: top\n    width: 2\n  - {label: low}\n")
    recipe = load_recipe(path)
    assert recipe.sizes == [1, 2]
    assert recipe.rows == [Row("top", 2.0), Row("low")] and isinstance(recipe.rows[0].width, float)


def test_list_items_are_located(tmp_path: Path, shelf: None) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        "sizes:\n  - 1\n  - two\nrows:\n  - label: top\n  - label: low\n    width: wide\n    heigth: 3\n  - 7\n",
    )
    assert issues_of(path) == [
        f"{path}:3: sizes.1: got str 'two' (expected an integer)",
        f"{path}:7: rows.1.width: got str 'wide' (expected a number)",
        f"{path}:8: rows.1.heigth: unknown key (expected one of: label, width)",
        f"{path}:9: rows.2: got int (expected a mapping)",
    ]


def test_a_list_field_needs_a_list(tmp_path: Path, shelf: None) -> None:
    path = write(tmp_path, "r.yaml", "sizes: 3\nrows: x\nitems: lamp\n")
    assert issues_of(path) == [
        f"{path}:1: sizes: got int 3 (expected a list of integers)",
        f"{path}:2: rows: got str 'x' (expected a list of mappings)",
        f"{path}:3: items: got str 'lamp' (expected a list of toy mappings, each with a 'kind' (one of: {TOY_KINDS}))",
    ]


def test_tagged_union(tmp_path: Path, shelf: None) -> None:
    text = "light: {kind: lamp, watts: 7}\nitems:\n  - kind: book\n    title: Emma\n    tags: [a]\n  - kind: lamp\n"
    recipe = load_recipe(write(tmp_path, "r.yaml", text))
    assert recipe.light == Lamp(watts=7.0) and recipe.spare is None
    assert recipe.items == [Book(title="Emma", tags=["a"]), Lamp()]
    assert recipe.to_dict()["items"][1] == {"kind": "lamp", "watts": 5.0, "colour": "warm"}
    assert load_recipe(write(tmp_path, "d.yaml", "seed: 1\n")).items == [Book(title="Dune")]  # the default


def test_tagged_union_errors(tmp_path: Path, shelf: None) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        "light: {watts: 7}\n"
        "spare: {kind: bok}\n"
        "items:\n"
        "  - kind: book\n"
        "    titel: Emma\n"
        "  - kind: lamp\n"
        "    watts: bright\n"
        "  - lamp\n"
        "  - kind: 3\n"
        "  - kind: poster\n",
    )
    assert issues_of(path) == [
        f"{path}:1: light: missing 'kind' (expected one of: {TOY_KINDS})",
        f"{path}:2: spare.kind: unknown toy 'bok': did you mean 'book'? (known: {TOY_KINDS})",
        f"{path}:5: items.0.titel: unknown key (did you mean 'title'? expected one of: kind, title, pages, first_page, "
        "tags)",
        f"{path}:7: items.1.watts: got str 'bright' (expected a number)",
        f"{path}:8: items.2: got str 'lamp' (expected a toy mapping with a 'kind' (one of: {TOY_KINDS}))",
        f"{path}:9: items.3.kind: got int 3 (expected one of: {TOY_KINDS})",
        f"{path}:10: items.4: missing 'image' (expected a string)",
    ]


def test_member_check_hook(tmp_path: Path, shelf: None) -> None:
    path = write(tmp_path, "r.yaml", "items:\n  - kind: book\n    pages: 10\n    first_page: 20\n")
    assert issues_of(path) == [f"{path}:4: items.0.first_page: got 20 (expected at most pages, 10)"]
    # With a wrongly typed field the hook does not run (it would compare a string with an integer).
    path = write(tmp_path, "r.yaml", "items:\n  - kind: book\n    pages: ten\n    first_page: 20\n")
    assert issues_of(path) == [f"{path}:3: items.0.pages: got str 'ten' (expected an integer)"]


def test_member_without_its_kind_field_is_a_schema_bug(tmp_path: Path, shelf: None) -> None:
    with pytest.raises(TypeError, match="not a config dataclass"):
        load_recipe(write(tmp_path, "r.yaml", "odd: {kind: plain}\n"))


def test_set_into_lists(tmp_path: Path, shelf: None) -> None:
    path = write(tmp_path, "r.yaml", "items:\n  - kind: book\n  - kind: lamp\nsizes: [1, 2]\n")
    recipe = load_recipe(path, ["items.1.watts=9", "items.0.title=2.0", "sizes.0=5"])
    assert recipe.items == [Book(title="2.0"), Lamp(watts=9.0)] and recipe.sizes == [5, 2]
    # A list the file leaves out is indexed from its schema default.
    recipe = load_recipe(write(tmp_path, "d.yaml", "seed: 1\n"), ["items.0.pages=50"])
    assert recipe.items == [Book(title="Dune", pages=50)]
    assert issues_of(path, ["items.3.title=x", "rows.0.label=y", "items.kind=lamp"]) == [
        "--set items.3.title=x: items.3: index 3 out of range (list has 2 items)",
        "--set rows.0.label=y: rows.0: index 0 out of range (list has 0 items)",
        "--set items.kind=lamp: items.kind: expected a list index, got 'kind' (list has 2 items)",
    ]
    assert issues_of(path, ["items.0.pages=many"]) == [
        "--set items.0.pages=many: items.0.pages: got str 'many' (expected an integer)"
    ]


def test_set_whole_lists_and_union_mappings(tmp_path: Path, shelf: None) -> None:
    path = write(tmp_path, "r.yaml", "items:\n  - kind: book\n")
    recipe = load_recipe(
        path, ["items=[{kind: lamp}, {kind: book, title: Emma}]", "spare.kind=lamp", "spare.watts=3", "rows=[]"]
    )
    assert recipe.items == [Lamp(), Book(title="Emma")] and recipe.spare == Lamp(watts=3.0) and recipe.rows == []
    assert issues_of(path, ["spare.watts=3", "items=[{kind: lamp, watts: x}]"]) == [
        "--set items=[{kind: lamp, watts: x}]: items.0.watts: got str 'x' (expected a number)",
        f"--set spare.watts=3: spare: missing 'kind' (expected one of: {TOY_KINDS})",
    ]


def test_to_yaml_round_trips(tmp_path: Path, shelf: None) -> None:
    recipe = Shelf(
        name="shelfy",
        sizes=[1, 2],
        rows=[Row("a", 2.5)],
        items=[Book(title="Emma", tags=["x"]), Lamp(watts=2.5, colour="cold"), Poster(image="p.png")],
        spare=Lamp(),
    )
    path = write(tmp_path, "shelfy.yaml", recipe.to_yaml())
    loaded = load_recipe(path)
    # Sections left null in code are filled with their defaults on load; everything written comes back equal.
    assert loaded.teacher.source.kind == "procedural" and loaded.compress.methods[0].kind == "openvino_ptq"
    assert loaded.data.calibration.source.kind == "procedural"
    calibration = dataclasses.replace(recipe.data.calibration, source=loaded.data.calibration.source)
    assert dataclasses.replace(loaded, teacher=recipe.teacher, distill=recipe.distill) == dataclasses.replace(
        recipe,
        export=loaded.export,
        compress=loaded.compress,
        data=dataclasses.replace(recipe.data, calibration=calibration),
    )
    assert load_recipe(write(tmp_path, "again.yaml", loaded.to_yaml())) == loaded


PAPER_RECIPES = sorted((ROOT / "recipes" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("recipe", PAPER_RECIPES, ids=lambda p: p.stem)
def test_paper_recipes_are_sound_and_name_their_missing_assets(recipe: Path, tmp_path: Path) -> None:
    """A full-scale recipe validates without its assets; the build refuses it, listing every missing file."""
    with pytest.raises(RecipeError) as refused:
        load_recipe(recipe)
    assert refused.value.only_missing_assets
    missing = {issue.key for issue in refused.value.issues}
    # Every paper distils from pre-trained teachers: one, or several (MST-KD's specialists, each its own key).
    assert "teacher.checkpoint" in missing or any(k.startswith("teacher.checkpoints.") for k in missing)

    checked = CliRunner().invoke(main, ["check", str(recipe)])
    assert checked.exit_code == 0, checked.output
    assert "factory build` needs files that are not there" in checked.output
    assert all(f": {key}: " in checked.output for key in missing)

    run_dir = tmp_path / "run"
    built = CliRunner().invoke(main, ["build", str(recipe), "--set", f"run_dir={run_dir}"])
    assert built.exit_code == 2
    assert "files it names are not there" in built.output
    assert all(f": {key}: " in built.output and "does not exist" in built.output for key in missing)
    assert not run_dir.exists()  # refused before anything ran

    # With a file (or folder) at each named path, the recipe loads: nothing else is wrong with it. A path without a
    # suffix names a folder (a code clone, an image folder, an RFW root), one with a suffix a file.
    overrides = []
    for issue in refused.value.issues:
        stand_in = tmp_path / issue.key.replace(".", "_")
        named = Path(issue.message.partition(" does not exist")[0])
        if not named.suffix:
            stand_in.mkdir()
        else:
            stand_in.write_bytes(b"")
        overrides.append(f"{issue.key}={stand_in}")
    teacher = load_recipe(recipe, overrides).teacher
    assert teacher.checkpoint is not None or teacher.checkpoints


def test_a_missing_file_among_other_problems_fails_check(tmp_path: Path) -> None:
    """Only a recipe whose sole problems are missing files passes ``check``; any other problem still exits 2."""
    path = write(tmp_path, "r.yaml", "teacher:\n  checkpoint: missing.pt\ndistill:\n  student: tinyfar_x\n")
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2
    assert "missing.pt does not exist" in result.output and "unknown model 'tinyfar_x'" in result.output
