"""Reading recipe text: located YAML, ``extends``, ``--set`` overrides, and the problems found on the way.

A recipe file is read with ``yaml.safe_load`` semantics only (no tags that build Python objects), may pull in shared
fragments with ``extends:`` (paths relative to the file that says it, merged depth-first, the extending file wins;
mappings merge key by key, anything else, lists included, is replaced whole), and can be overridden from the command
line with ``--set dotted.key=value``. Every problem is a :class:`RecipeIssue` located at ``FILE:LINE`` or at the
``--set KEY=VALUE`` it came from; :class:`RecipeError` carries all of them (the first :data:`MAX_ISSUES`, then a
count), so a user fixes a recipe in one pass.

Reading cannot be made to hang: YAML is composed into nodes and turned into data here, counting every value with
aliases expanded (:data:`MAX_VALUES`, so a "billion laughs" alias bomb stops at once), nesting
(:data:`MAX_DEPTH`), files pulled in by ``extends`` (:data:`MAX_FILES`) and file size (:data:`MAX_BYTES`). A file
that is not UTF-8 is named with the offset and line of its first bad byte.

``--set`` keys may index lists (``compress.methods.0.preset=performance``; a list the file leaves at its schema
default is indexed too), build mappings key by key, and take whole values as YAML flow text (``'formats=[{kind:
onnx}]'``).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Limits that keep a hostile or broken recipe from hanging `factory check`. A real recipe with its fragments has a
# few hundred values, nests about six levels and is a few KB; the limits are far above that and far below a hang.
MAX_VALUES = 100_000  # YAML nodes after expanding aliases, over every file and --set value of one recipe
MAX_DEPTH = 64  # nested mappings/lists (the YAML composer itself recurses, and gives up at a few hundred)
MAX_FILES = 64  # files read through `extends` (a fragment that several parents extend is read once per parent)
MAX_BYTES = 1 << 20  # per file
MAX_ISSUES = 50  # reported problems; a count of the rest follows them

SET = "--set"  # the location of a value given on the command line: "--set key=value", no line


@dataclass(frozen=True)
class RecipeIssue:
    """One problem in a recipe, located: a file and line, or the ``--set key=value`` it came from (line 0)."""

    file: str
    line: int
    key: str
    message: str
    asset: bool = False  # a file the recipe names is not there: the recipe itself is sound (``factory check``)

    def __str__(self) -> str:
        if not self.file:  # a note about the report itself ("... and 12 more problems")
            return self.message
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = self.key or ("" if self.file.startswith(SET) else "<top>")
        return f"{where}: {key}: {self.message}" if key else f"{where}: {self.message}"


def _reading_order(issue: RecipeIssue) -> tuple[int, str, int]:
    # Files in reading order, file by file; --set problems after them, in the order they were found; a note last.
    if not issue.file:
        return 2, "", 0
    if issue.file.startswith(SET):
        return 1, "", 0
    return 0, issue.file, issue.line


class RecipeError(ValueError):
    """A recipe that cannot be used; ``issues`` holds every problem found (the first :data:`MAX_ISSUES`)."""

    def __init__(self, issues: list[RecipeIssue]) -> None:
        # The order of discovery follows the schema, not the file.
        ordered = sorted(issues, key=_reading_order)
        self.total = len(ordered)
        self.issues = ordered[:MAX_ISSUES]
        if self.total > MAX_ISSUES:
            more = self.total - MAX_ISSUES
            self.issues.append(RecipeIssue("", 0, "", f"… and {more} more problem{'s' * (more > 1)}"))
        super().__init__("\n".join(str(i) for i in self.issues))

    @property
    def only_missing_assets(self) -> bool:
        """Whether every problem is a named file that is not there (a full-scale recipe before its assets arrive)."""
        located = [i for i in self.issues if i.file]
        return bool(located) and self.total == len(located) and all(i.asset for i in located)


Loc = tuple[str, int]  # (file, line); line 0 for a --set value


def _set_loc(item: str) -> Loc:
    shown = item if len(item) <= 80 else item[:77] + "..."
    return f"{SET} {shown}", 0


# --------------------------------------------------------------------------------------------------------------
# Reading YAML with locations
# --------------------------------------------------------------------------------------------------------------


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}


@dataclass
class Budget:
    """What one recipe may still read: YAML values (aliases expanded) and files."""

    values: int = MAX_VALUES
    files: int = MAX_FILES


class _Unreadable(Exception):
    """Text that is not YAML; ``issue`` says where and why."""

    def __init__(self, issue: RecipeIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue


class _TooLarge(_Unreadable):
    """A document past :data:`MAX_VALUES`: reading stops at once (an alias bomb would otherwise never finish)."""


def _read_yaml(path: Path, budget: Budget, shown: str) -> tuple[Any, dict[str, Loc]]:
    """Parse one YAML file into plain data plus the (file, line) of every dotted key; ``shown`` names the file."""
    if path.exists() and not path.is_file():  # a folder, or a FIFO that would block the read
        raise RecipeError([RecipeIssue(shown, 0, "", "not a regular file (expected a recipe YAML file)")])
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise RecipeError([RecipeIssue(shown, 0, "", "file not found (expected a recipe YAML file)")]) from None
    except OSError as e:
        raise RecipeError([RecipeIssue(shown, 0, "", f"cannot read: {e.strerror}")]) from None
    if len(raw) > MAX_BYTES:
        problem = f"larger than {MAX_BYTES >> 20} MiB (expected a recipe YAML file)"
        raise RecipeError([RecipeIssue(shown, 0, "", problem)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        problem = f"not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} (expected a UTF-8 YAML file)"
        raise RecipeError([RecipeIssue(shown, line, "", problem)]) from None
    locs: dict[str, Loc] = {}
    issues: list[RecipeIssue] = []
    try:
        data = _parse(text, shown, "", locs, issues, budget)
    except _Unreadable as e:
        raise RecipeError([*issues, e.issue]) from None
    if issues:
        raise RecipeError(issues)
    return ({} if data is None else data), locs


def _parse(text: str, file: str, prefix: str, locs: dict[str, Loc], issues: list[RecipeIssue], budget: Budget) -> Any:
    """Plain data from YAML text (``None`` for an empty document); refused tags and shapes go to ``issues``.

    Nodes are composed first and turned into Python here, so no tag ever constructs an object and every value is
    counted: an alias is expanded where it is used, against the budget.
    """
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as e:  # a character YAML refuses (a NUL byte) is found before parsing starts
        raise _Unreadable(_yaml_issue(e, text, file)) from None
    try:
        root = loader.get_single_node()
        return None if root is None else _to_python(loader, root, file, prefix, locs, issues, budget, 0)
    except yaml.YAMLError as e:
        raise _Unreadable(_yaml_issue(e, text, file)) from None
    except RecursionError:  # the composer recurses per level: thousands of "[" exhaust the stack before we see them
        problem = f"nested too deeply to read (expected at most {MAX_DEPTH} levels of mappings and lists)"
        raise _Unreadable(RecipeIssue(file, loader.line + 1, prefix.rstrip("."), problem)) from None
    finally:
        loader.dispose()


def _yaml_issue(e: yaml.YAMLError, text: str, file: str) -> RecipeIssue:
    if isinstance(e, yaml.MarkedYAMLError):
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        return RecipeIssue(file, line, "", f"not valid YAML: {e.problem}")
    if isinstance(e, yaml.reader.ReaderError):
        code = e.character if isinstance(e.character, int) else ord(e.character)
        line = text.count("\n", 0, e.position) + 1
        problem = f"not valid YAML: character #x{code:04x} at offset {e.position} ({e.reason})"
        return RecipeIssue(file, line, "", problem)
    return RecipeIssue(file, 0, "", f"not valid YAML: {e}")


def _outermost(file: str, line: int, key: str, locs: dict[str, Loc]) -> tuple[str, int, str]:
    # The top-level key holding a problem deep inside: an alias's line is its anchor's, far from where it is used.
    top = key.split(".")[0]
    return (file, locs[top][1], top) if top in locs and locs[top][0] == file else (file, line, key)


def _to_python(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    file: str,
    prefix: str,
    locs: dict[str, Loc],
    issues: list[RecipeIssue],
    budget: Budget,
    depth: int,
) -> Any:
    line, key = node.start_mark.line + 1, prefix.rstrip(".")
    budget.values -= 1
    if budget.values < 0:
        problem = (
            f"more than {MAX_VALUES} values once YAML aliases are expanded (expected a recipe of plain values; "
            "anchors used by anchors multiply)"
        )
        raise _TooLarge(RecipeIssue(*_outermost(file, line, key, locs), problem))
    if depth > MAX_DEPTH:
        issue = RecipeIssue(
            *_outermost(file, line, key, locs), f"nested deeper than {MAX_DEPTH} levels (expected a recipe)"
        )
        if issue not in issues[-1:]:  # a wide subtree past the limit is one problem, not one per leaf
            issues.append(issue)
        return None
    if node.tag not in _PLAIN_TAGS:  # e.g. !!python/object/apply on a list: refused before anything is built
        issues.append(RecipeIssue(file, line, key, f"tag {node.tag!r} is not allowed (recipes are plain data)"))
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            key_line = key_node.start_mark.line + 1
            if not isinstance(name, str) or not name:
                issues.append(RecipeIssue(file, key_line, key, "keys must be non-empty strings"))
                continue
            dotted = prefix + name
            if name in out:
                issues.append(RecipeIssue(file, key_line, dotted, "duplicate key (each key may appear once)"))
            locs[dotted] = (file, key_line)
            out[name] = _to_python(loader, value_node, file, dotted + ".", locs, issues, budget, depth + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            # The item's own line, not the list key's: in a block list each item sits on a line of its own.
            locs[f"{prefix}{i}"] = (file, item.start_mark.line + 1)
            items.append(_to_python(loader, item, file, f"{prefix}{i}.", locs, issues, budget, depth + 1))
        return items
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as e:
        issues.append(RecipeIssue(file, line, key, f"{e.problem} (recipes are plain data)"))
        return None
    except ValueError:  # an integer of thousands of digits: Python refuses to convert it (int_max_str_digits)
        issues.append(
            RecipeIssue(file, line, key, f"got a number {len(node.value)} characters long (expected a recipe value)")
        )
        return None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        # A tagged section of another kind replaces the one it extends: a QUD method has no use for feature KD's keys.
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        if both and ("kind" not in value or value["kind"] == out[key].get("kind")):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_with_extends(
    path: Path, seen: tuple[Path, ...], budget: Budget, shown: str | None = None
) -> tuple[dict[str, Any], dict[str, Loc]]:
    """One recipe file merged over the fragments it ``extends`` (depth-first), with the location of every key.

    ``seen`` are the files on the way here (a cycle is an error); ``shown`` names ``path`` in problems.
    """
    shown = shown or str(path)
    data, locs = _read_yaml(path, budget, shown)
    if not isinstance(data, dict):
        raise RecipeError([RecipeIssue(shown, 1, "", "a recipe must be a mapping of keys to values")])
    extends = data.pop("extends", None)
    if extends is None:
        return data, locs
    line = locs.pop("extends")[1]
    parents = [extends] if isinstance(extends, str) else extends
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise RecipeError([RecipeIssue(shown, line, "extends", "must be a path or a list of paths")])
    merged: dict[str, Any] = {}
    merged_locs: dict[str, Loc] = {}
    for parent in parents:
        parent_path = (path.parent / parent).resolve()
        if parent_path in seen:
            raise RecipeError([RecipeIssue(shown, line, "extends", f"cycle: {parent} extends this file again")])
        if not parent_path.is_file():
            raise RecipeError(
                [RecipeIssue(shown, line, "extends", f"{parent_path} not found (expected a recipe fragment)")]
            )
        budget.files -= 1
        if budget.files < 0:  # fragments that extend the same fragment twice, nested, double at every level
            problem = f"pulls in more than {MAX_FILES} files (expected a few fragments)"
            raise RecipeError([RecipeIssue(shown, line, "extends", problem)])
        pdata, plocs = load_with_extends(parent_path, (*seen, parent_path), budget)
        merged = _merge(merged, pdata)
        merged_locs.update(plocs)
    for k in [k for k in locs if k.split(".")[0] in data]:
        merged_locs[k] = locs[k]
    return _merge(merged, data), merged_locs


# --------------------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------------------


def apply_overrides(
    data: dict[str, Any],
    locs: dict[str, Loc],
    overrides: list[str],
    defaults: dict[str, Any] | None = None,
    budget: Budget | None = None,
) -> tuple[dict[str, str], list[RecipeIssue]]:
    """Set every ``dotted.key=value``; returns the raw text per key and the overrides' problems.

    The raw text matters for string fields (``version=2.0`` is the text "2.0"). An override that cannot be applied
    is reported and skipped; the others are still applied and validated. Every value set is located at its
    ``--set key=value``. ``defaults`` is the schema's default recipe as plain data: indexing a list that the files
    leave out starts from its default items.
    """
    budget = budget or Budget()
    issues: list[RecipeIssue] = []
    raw_text: dict[str, str] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        where = _set_loc(item)
        if not sep or not key:
            issues.append(RecipeIssue(where[0], 0, "", "expected dotted.key=value, e.g. distill.train.steps=200"))
            continue
        parts = key.split(".")
        if len(parts) > MAX_DEPTH:
            problem = f"more than {MAX_DEPTH} parts in the key (expected a recipe key)"
            issues.append(RecipeIssue(where[0], 0, "", problem))
            continue
        found: list[RecipeIssue] = []
        try:
            value = _parse(raw, where[0], key + ".", {}, found, budget) if raw.strip() else ""
        except _TooLarge as e:  # the budget is spent: any later value would be refused for this one's size
            issues.append(dataclasses.replace(e.issue, line=0))
            break
        except _Unreadable:
            value = raw  # not YAML (name=a: b): the text as it is, for a string field
        if found:  # a refused tag, a duplicate key: lines inside a --set value mean nothing
            issues += [dataclasses.replace(i, line=0) for i in found]
            continue
        problem = _set_path(data, locs, parts, value, defaults, where)
        if problem:
            issues.append(RecipeIssue(where[0], 0, *problem))
            continue
        raw_text[key] = raw.strip()
        _mark_set(locs, key, where)
    return raw_text, issues


def _set_path(
    data: dict[str, Any], locs: dict[str, Loc], parts: list[str], value: Any, defaults: Any, where: Loc
) -> tuple[str, str] | None:
    """Put ``value`` at ``parts`` inside ``data``, making mappings on the way; ``(key, problem)`` if it cannot."""
    node: Any = data
    default = defaults
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = _index(part)
            if index is None:
                return here, f"expected a list index, got {part!r} (list has {_count(len(node))})"
            if index >= len(node):
                return here, f"index {index} out of range (list has {_count(len(node))})"
            child_default = default[index] if isinstance(default, list) and index < len(default) else None
            key: Any = index
        else:
            # A union member of another kind than the default's: the default says nothing about its fields.
            if isinstance(default, dict) and "kind" in default and node.get("kind") != default["kind"]:
                default = None
            child_default = default.get(part) if isinstance(default, dict) else None
            key = part
            indexed = not last and _index(parts[depth + 1]) is not None
            if indexed and part not in node and isinstance(child_default, list):
                node[part] = copy.deepcopy(child_default)
                _mark_set(locs, here, where)
        if last:
            if key == "kind" and isinstance(node, dict) and node.get("kind") not in (None, value):
                # Another kind starts its section afresh, as in an extending file: the old kind's keys mean
                # nothing to it (so its own keys are set after the kind: --set x.kind=files --set x.path=...).
                node.clear()
            node[key] = value
            return None
        child = node[key] if isinstance(node, list) else node.get(key)
        if not isinstance(child, dict | list):
            child = node[key] = {}
            # A mapping this override made: its own problems (a missing kind) are the --set's.
            _mark_set(locs, here, where)
        node, default = child, child_default
    return None


def _index(part: str) -> int | None:
    # ASCII digits only: str.isdigit() takes "²", which int() refuses.
    return int(part) if part.isascii() and part.isdigit() and len(part) < 10 else None


def _mark_set(locs: dict[str, Loc], key: str, where: Loc) -> None:
    locs[key] = where
    for sub in [k for k in locs if k.startswith(key + ".")]:
        locs[sub] = where


def _count(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"
