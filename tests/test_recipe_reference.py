"""The recipe reference (recipes/REFERENCE.md) is generated from the schema, complete, and checked to be current."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Literal

import pytest

from factory.recipe import reference
from factory.recipe.reference import Root, generate, render
from factory.recipe.schema import Recipe, between, matching

REGENERATE = "python -m factory.recipe.reference"


@pytest.fixture(scope="module")
def generated() -> str:
    return generate()


def test_checked_in_reference_is_current(generated: str) -> None:
    # The CI check: a schema change (a field, a comment, a registered kind) without regenerating fails here.
    problem = reference.check(reference.DEFAULT_OUT, generated)
    assert problem is None, problem


def _dataclasses_in(tp: object) -> list[tuple[type, bool]]:
    """The dataclasses a field's type holds, each with whether it is an item of a list or a value of a dict."""
    if dataclasses.is_dataclass(tp):
        return [(tp, False)]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, dict):
        return [(cls, True) for cls, _ in _dataclasses_in(args[-1])] if args else []
    return [found for arg in args for found in _dataclasses_in(arg)]


def _reachable_keys(cls: type, path: str = "") -> list[str]:
    """Every dotted key of the schema below ``cls`` (``*`` for a list's items or a dict's values)."""
    keys, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        keys.append(key)
        for child, contained in _dataclasses_in(hints[f.name]):
            keys += _reachable_keys(child, f"{key}.*" if contained else key)
    return keys


def _documented_keys(text: str) -> set[str]:
    """Dotted keys the Markdown documents: each section's rows under its heading's path and its "same keys at"."""
    keys, paths = set(), []
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            match = re.fullmatch(r"`([^`]+)`", heading)
            paths = [""] if heading == "Top level" else [match.group(1)] if match else []
        elif line.startswith("The same keys, with the same defaults, at "):
            paths += re.findall(r"`([^`]+)`", line)
        elif line.startswith("| `"):
            key = re.match(r"\| `([^`]+)`", line).group(1)
            keys |= {f"{p}.{key}" if p else key for p in paths}
    return keys


def test_every_recipe_key_is_documented(generated: str) -> None:
    expected = _reachable_keys(Recipe)
    assert len(expected) > 50
    missing = [key for key in expected if key not in _documented_keys(generated)]
    assert not missing, f"keys the reference does not document: {missing}"


def _row(text: str, section: str, key: str) -> list[str]:
    """The cells of ``key``'s row in the section headed ``section``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and line.lstrip("#").strip() == section)
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith(f"| `{key}` |"):
            return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
    raise AssertionError(f"no row for {key} under {section}")


def test_source_comments_become_descriptions(generated: str) -> None:
    # A same-line comment (Recipe.threads) and a comment of two lines above the field (DataConfig.benchmark).
    assert _row(generated, "Top level", "threads")[-1] == "torch/NNCF threads for training and evaluation"
    assert _row(generated, "`data`", "benchmark")[-1].startswith(
        "A real benchmark instead of the procedural one: an insightface verification .bin (one group) or an RFW root "
        "(a group per race)"
    )
    # Field metadata in the loader's words, a bound that depends on the machine shown by name, Literal types.
    threads = _row(generated, "Top level", "threads")
    assert threads[1:4] == ["`int`", "`2`", "an integer in [1, high]: high is the number of CPUs this process may use"]
    assert _row(generated, "`teacher.train`", "device")[1] == r'`"cpu" \| "cuda" \| "auto"`'
    # A section's defaults are those its parent makes: distillation trains with Adam.
    assert _row(generated, "`distill.train`", "optimizer")[2] == "`adam`"
    assert _row(generated, "`teacher.train`", "optimizer")[2] == "`sgd`"


def test_registered_kinds_and_names_are_listed(generated: str) -> None:
    assert "### `source` kinds" in generated
    assert "#### `source` kind `procedural`" in generated
    assert "### `model` names" in generated
    assert re.search(r"^\| `tinyfar_c` \| TinyFaR-C", generated, re.M)
    assert "## Deploy target files" in generated
    assert " at 0x" not in generated  # no memory addresses: the same text on every machine


def test_check_names_the_stale_line_and_the_command(tmp_path, capsys, generated: str) -> None:
    out = tmp_path / "REFERENCE.md"
    assert reference.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == generated
    assert reference.main(["--check", "--out", str(out)]) == 0

    lines = generated.splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if line.startswith("| `seed` |"))
    lines[n] = lines[n].replace("`0`", "`1`", 1)
    out.write_text("".join(lines), encoding="utf-8")
    capsys.readouterr()
    assert reference.main(["--check", "--out", str(out)]) == 1
    message = capsys.readouterr().err
    assert f"line {n + 1} is " in message
    assert f"`{REGENERATE} --out {out}`" in message

    out.unlink()
    assert reference.main(["--check", "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err


# A toy tree: the generator's rows for it, exactly.


@dataclass
class ToyInner:
    """Inner settings of the toy."""

    # how many times
    # (at least once)
    count: int = field(default=3, metadata=between(ge=1))
    mode: Literal["fast", "slow"] = "fast"  # which way; x < 1 is *escaped*


@dataclass
class ToyRoot:
    """A toy tree."""

    name: str = field(default="", metadata=matching("[a-z]*", "lower-case letters"))
    ratio: float | None = field(default=None, metadata=between(gt=0, le=1))
    inner: ToyInner = field(default_factory=lambda: ToyInner(count=5))
    items: list[ToyInner] = field(default_factory=list)  # each with the class's defaults
    limit: float = field(default=0.5, metadata=between(ge=0, le=lambda: 4.0, note="{high} is what the machine has"))
    tags: dict[str, int] = field(default_factory=lambda: {"a": 1})
    required: bool = field(default=False)

    def check(self, fail: typing.Any) -> None:
        """The name and the ratio go together.

        (Only this first paragraph is shown.)
        """


def test_toy_tree_golden() -> None:
    text = render([Root("Toy", "", ToyRoot)], "Toy reference")
    sections: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("### "):
            current = sections.setdefault(line[4:], [])
        elif line.startswith("|") or (line and sections and not line.startswith("#")):
            current.append(line)
    assert sections == {
        "Top level": [
            "A toy tree.",
            "Checked together: The name and the ratio go together.",
            "| key | type | default | constraint | description |",
            "|---|---|---|---|---|",
            "| `name` | `str` | `''` | lower-case letters |  |",
            r"| `ratio` | `float` \| `null` | `null` | a number in (0, 1] |  |",
            "| `inner` | [mapping](#inner) | (its section) |  |  |",
            "| `items` | list[[mapping](#items)] | `[]` |  | each with the class's defaults |",
            "| `limit` | `float` | `0.5` | a number in [0, high]: high is what the machine has |  |",
            "| `tags` | dict[`str`, `int`] | `{a: 1}` |  |  |",
            "| `required` | `bool` | `false` |  |  |",
        ],
        "`inner`": [
            "Inner settings of the toy.",
            "| key | type | default | constraint | description |",
            "|---|---|---|---|---|",
            "| `count` | `int` | `5` | an integer >= 1 | how many times (at least once) |",
            r'| `mode` | `"fast" \| "slow"` | `fast` |  | which way; x &lt; 1 is \*escaped\* |',
        ],
        "`items.*`": [
            "Inner settings of the toy.",
            "| key | type | default | constraint | description |",
            "|---|---|---|---|---|",
            "| `count` | `int` | `3` | an integer >= 1 | how many times (at least once) |",
            r'| `mode` | `"fast" \| "slow"` | `fast` |  | which way; x &lt; 1 is \*escaped\* |',
        ],
    }
