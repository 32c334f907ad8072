"""Loading recipes: located YAML, ``extends``, ``--set`` overrides and validation against the schema.

A recipe file is read with ``yaml.safe_load`` semantics only (no tags that build Python objects), may pull in shared
fragments with ``extends:`` (paths relative to the file that says it, merged depth-first, the extending file wins;
mappings merge key by key, anything else, lists included, is replaced whole), and can be overridden from the command
line with ``--set dotted.key=value``. Every problem is reported as ``FILE:LINE: dotted.key: what is wrong (what is
expected)``, or ``--set KEY=VALUE: dotted.key: ...`` for a value given on the command line, all of them at once (the
first :data:`MAX_ISSUES`, then a count), so a user fixes a recipe in one pass. The resolved recipe (after
``extends`` and overrides) is what stages hash and what gets saved with outputs.

Reading cannot be made to hang: YAML is composed into nodes and turned into data here, counting every value with
aliases expanded (:data:`MAX_VALUES`, so a "billion laughs" alias bomb stops at once), nesting
(:data:`MAX_DEPTH`), files pulled in by ``extends`` (:data:`MAX_FILES`) and file size (:data:`MAX_BYTES`). A file
that is not UTF-8 is named with the offset and line of its first bad byte.

Types the validator understands in a schema dataclass (:mod:`factory.recipe.schema`):

- ``int``, ``float`` (an integer is accepted, and so is text that ``float()`` reads: YAML 1.1 reads ``1e-3`` as a
  string; NaN and infinity never are), ``str``, ``bool``, ``Literal[...]`` and ``X | None``.
- Field metadata ``between(...)`` (a number range) and ``matching(...)`` (a string pattern) from
  :mod:`factory.recipe.schema`, checked for every field of every dataclass, union members included.
- A nested dataclass: a mapping, checked key by key; unknown keys get a did-you-mean, fields without a default are
  required.
- ``list[X]`` of any of these or of a tagged union: items are located as ``key.0``, ``key.1.sub``; field metadata
  (``path``, ``registry``, ``union``, ``range``, ``pattern``) applies to each item.
- A tagged union: a field annotated ``Any`` (or ``list[Any]``) with metadata ``{"union": FAMILY}``. The value is a
  mapping whose ``kind`` names a config dataclass registered in that family; that dataclass has a field
  ``kind: str`` defaulting to its registered name (so the resolved YAML keeps the kind) and may define
  ``check(self, fail)`` for cross-field checks, calling ``fail(relative_key, message)``. Its default is given as
  plain data in the metadata, ``{"union": "source", "default": {"kind": "procedural"}}``, and validated like
  written YAML when the recipe leaves the section out: the schema never imports the implementing module.

Families (for ``{"registry": F}`` names and ``{"union": F}`` unions) are declared in :data:`UNION_FAMILIES` and
imported only when a recipe uses them.

``--set`` keys may index lists (``compress.methods.0.preset=performance``; a list the file leaves at its schema
default is indexed too), build mappings key by key, and take whole values as YAML flow text (``'formats=[{kind:
onnx}]'``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from factory.recipe.schema import Recipe
from factory.registry import Registry, UnknownNameError

# Family -> (module, attribute) of its Registry. Imported lazily: the model zoo pulls in timm, which `factory --help`
# should not pay for. Union families register config dataclasses (see the module docstring).
UNION_FAMILIES: dict[str, tuple[str, str]] = {
    "model": ("factory.models.zoo", "MODELS"),
    "head": ("factory.models.heads", "HEADS"),
    "kd_loss": ("factory.distill.losses", "KD_LOSSES"),
    "source": ("factory.data.sources", "SOURCES"),
    "exporter": ("factory.export.exporters", "EXPORTERS"),
    "compressor": ("factory.compress.compressors", "COMPRESSORS"),
}

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


Loc = tuple[str, int]  # (file, line); line 0 for a --set value


def _set_loc(item: str) -> Loc:
    shown = item if len(item) <= 80 else item[:77] + "..."
    return f"{SET} {shown}", 0


# --------------------------------------------------------------------------------------------------------------
# Reading YAML with locations
# --------------------------------------------------------------------------------------------------------------


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}


@dataclass
class _Budget:
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


def _read_yaml(path: Path, budget: _Budget, shown: str) -> tuple[Any, dict[str, Loc]]:
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


def _parse(text: str, file: str, prefix: str, locs: dict[str, Loc], issues: list[RecipeIssue], budget: _Budget) -> Any:
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
    budget: _Budget,
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
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_with_extends(
    path: Path, seen: tuple[Path, ...], budget: _Budget, shown: str | None = None
) -> tuple[dict[str, Any], dict[str, Loc]]:
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
        pdata, plocs = _load_with_extends(parent_path, (*seen, parent_path), budget)
        merged = _merge(merged, pdata)
        merged_locs.update(plocs)
    for k in [k for k in locs if k.split(".")[0] in data]:
        merged_locs[k] = locs[k]
    return _merge(merged, data), merged_locs


# --------------------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------------------


def _apply_overrides(
    data: dict[str, Any],
    locs: dict[str, Loc],
    overrides: list[str],
    defaults: dict[str, Any] | None = None,
    budget: _Budget | None = None,
) -> tuple[dict[str, str], list[RecipeIssue]]:
    """Set every ``dotted.key=value``; returns the raw text per key and the overrides' problems.

    The raw text matters for string fields (``version=2.0`` is the text "2.0"). An override that cannot be applied
    is reported and skipped; the others are still applied and validated. Every value set is located at its
    ``--set key=value``. ``defaults`` is the schema's default recipe as plain data: indexing a list that the files
    leave out starts from its default items.
    """
    budget = budget or _Budget()
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


# --------------------------------------------------------------------------------------------------------------
# Validation against the schema
# --------------------------------------------------------------------------------------------------------------


def _type_name(tp: Any, meta: Any = None) -> str:
    family = (meta or {}).get("union")
    if family and tp is Any:
        return f"a {family} mapping with a 'kind' (one of: {_kinds(family)})"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a, meta) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_items_name(_item_type(tp), meta)}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _items_name(tp: Any, meta: Any) -> str:
    family = (meta or {}).get("union")
    if family and tp is Any:
        return f"{family} mappings, each with a 'kind' (one of: {_kinds(family)})"
    if dataclasses.is_dataclass(tp):
        return "mappings"
    plural = {int: "integers", float: "numbers", str: "strings", bool: "true or false values"}
    return plural.get(tp) or f"items, each {_type_name(tp, meta)}"


def _item_type(tp: Any) -> Any:
    args = typing.get_args(tp)
    return args[0] if args else Any


def _kinds(family: str) -> str:
    return ", ".join(_registry(family).names()) or "none registered"


def _got(value: Any) -> str:
    return f"got {type(value).__name__} {_shown(value)}"


def _shown(value: Any) -> str:
    # A whole mapping or a long text in an error line hides the line's point: the start is enough to recognise it.
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _float_text(value: str) -> float | None:
    """A number written as text: YAML 1.1 reads ``1e-3`` (no dot) as a string, where users mean 0.001."""
    try:
        return float(value)
    except ValueError:
        return None


class _Validator:
    def __init__(self, locs: dict[str, Loc], root_file: str, override_text: dict[str, str] | None = None) -> None:
        self.locs = locs
        self.override_text = override_text or {}
        self.root_file = root_file
        self.issues: list[RecipeIssue] = []
        self.failed: set[str] = set()  # dotted keys with a problem: checks that read them stand down
        self.type_problems = 0  # problems after which a value may not have its declared type

    def where(self, dotted: str) -> Loc:
        probe = dotted
        while probe:
            if probe in self.locs:
                return self.locs[probe]
            probe = probe.rpartition(".")[0]
        return (self.root_file, 1)

    def fail(self, dotted: str, message: str, typed: bool = False, at: str | None = None) -> None:
        """Report ``message`` about ``dotted``, located at ``at`` (default: ``dotted``).

        ``typed``: the value has its declared type (only its range is off), so checks that read it may still run.
        """
        file, line = self.where(at or dotted)
        self.issues.append(RecipeIssue(file, line, dotted, message))
        self.failed.add(dotted)
        self.type_problems += not typed

    def clean(self, *keys: str) -> bool:
        """Whether none of ``keys`` (nor a section holding one, nor a key inside one) has a problem."""
        return not any(
            f == k or k.startswith(f + ".") or f.startswith(k + ".") or not f for f in self.failed for k in keys
        )

    def build(self, cls: type, data: Any, prefix: str) -> Any:
        """An instance of dataclass ``cls`` from mapping ``data``, or None when it cannot be built."""
        if not isinstance(data, dict):
            self.fail(prefix.rstrip("."), f"got {type(data).__name__} (expected a mapping)")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            dotted = prefix + key
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(dotted, f"unknown key ({hint}expected one of: {', '.join(fields)})")
                continue
            if value is None and "default" in fields[key].metadata:
                value = copy.deepcopy(fields[key].metadata["default"])  # null: the section's default
            kwargs[key] = self.value(hints[key], value, dotted, fields[key].metadata)
        for name, f in fields.items():
            # A union section left out of the recipe: its default is plain data, validated like a written one (so
            # the schema names its default kind without importing the module that implements it).
            if name not in kwargs and "default" in f.metadata:
                kwargs[name] = self.value(hints[name], copy.deepcopy(f.metadata["default"]), prefix + name, f.metadata)
        missing = [
            f
            for f in fields.values()
            if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        for f in missing:
            self.fail(prefix.rstrip("."), f"missing {f.name!r} (expected {_type_name(hints[f.name], f.metadata)})")
        return None if missing else cls(**kwargs)

    def value(self, tp: Any, value: Any, dotted: str, meta: Any) -> Any:
        origin = typing.get_origin(tp)
        if meta.get("union") and tp is Any:
            return self.member(meta["union"], value, dotted)
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, dotted + ".")
        if origin in (Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.value(inner, value, dotted, meta)
        if origin is list:
            if not isinstance(value, list):
                self.fail(dotted, f"{_got(value)} (expected {_type_name(tp, meta)})")
                return value
            return [self.value(_item_type(tp), item, f"{dotted}.{i}", meta) for i, item in enumerate(value)]
        if origin is Literal:
            if value not in typing.get_args(tp):
                self.fail(dotted, f"got {_shown(value)} (expected {_type_name(tp)})")
            return value
        if tp is str and dotted in self.override_text and isinstance(value, (int, float)):
            value = self.override_text[dotted]  # --set release.version=2.0 means the text "2.0"
        if tp is float and isinstance(value, str) and _float_text(value) is not None:
            value = _float_text(value)
        ok = (
            (tp is bool and isinstance(value, bool))
            or (tp is int and isinstance(value, int) and not isinstance(value, bool))
            or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (tp is str and isinstance(value, str))
        )
        if not ok:
            self.fail(dotted, f"{_got(value)} (expected {_type_name(tp)})")
            return value
        if tp is float:
            try:
                value = float(value)
            except OverflowError:  # an integer literal with hundreds of digits
                self.fail(dotted, f"got {_shown(value)} (expected {_range_text(meta, False)})", typed=True)
                return value
        if tp in (int, float):
            self.check_range(dotted, value, meta, tp is int)
        if tp is str and meta.get("pattern") and not meta["pattern"][0].fullmatch(value):
            self.fail(dotted, f"got {_shown(value)} (expected {meta['pattern'][1]})", typed=True)
        if meta.get("path"):
            value = self.resolve_path(dotted, value)
        if meta.get("registry"):
            self.check_name(dotted, meta["registry"], value)
        return value

    def member(self, family: str, value: Any, dotted: str) -> Any:
        """The config dataclass instance that a tagged-union mapping's ``kind`` selects, validated."""
        if not isinstance(value, dict):
            self.fail(dotted, f"{_got(value)} (expected {_type_name(Any, {'union': family})})")
            return None
        if "kind" not in value:
            self.fail(dotted, f"missing 'kind' (expected one of: {_kinds(family)})")
            return None
        kind = value["kind"]
        if not isinstance(kind, str):
            self.fail(f"{dotted}.kind", f"{_got(kind)} (expected one of: {_kinds(family)})")
            return None
        try:
            cls = _registry(family).get(kind)
        except UnknownNameError as e:
            self.fail(f"{dotted}.kind", e.message)
            return None
        _check_member_class(family, kind, cls)
        before = self.type_problems
        member = self.build(cls, value, dotted + ".")
        check = getattr(member, "check", None)
        # Cross-field checks assume every field has its declared type, so they wait for a well-typed member (a value
        # out of its range is still reported with them).
        if self.type_problems == before and callable(check):

            def fail(key: str, message: str) -> None:
                self.fail(f"{dotted}.{key}" if key else dotted, message)

            check(fail)
        return member

    def check_range(self, dotted: str, value: float, meta: Any, integer: bool) -> None:
        """A number outside its field's ``between(...)`` range, or a float that is not finite, is a problem."""
        rng = meta.get("range")
        if not (rng.admits(value) if rng else math.isfinite(value)):
            self.fail(dotted, f"got {value!r} (expected {_range_text(meta, integer)})", typed=True)

    def resolve_path(self, dotted: str, value: str) -> str:
        file, _ = self.where(dotted)
        base = Path.cwd() if file.startswith(SET) else Path(file).parent
        path = (base / value).resolve()
        if not path.exists():
            self.fail(dotted, f"{path} does not exist (expected an existing file)")
        return str(path)

    def check_name(self, dotted: str, family: str, name: str) -> None:
        try:
            _registry(family).get(name)
        except UnknownNameError as e:
            self.fail(dotted, e.message)


def _range_text(meta: Any, integer: bool) -> str:
    rng = meta.get("range")
    return rng.describe(integer) if rng else "a finite number"


def _registry(family: str) -> Registry[Any]:
    try:
        module, attribute = UNION_FAMILIES[family]
    except KeyError:
        raise ValueError(f"no registry for {family!r} (declare it in UNION_FAMILIES)") from None
    return getattr(importlib.import_module(module), attribute)


def _check_member_class(family: str, kind: str, cls: Any) -> None:
    # A schema bug, not a recipe problem: without `kind` defaulting to its name, asdict() would lose the tag.
    kind_field = {f.name: f for f in dataclasses.fields(cls)}.get("kind") if dataclasses.is_dataclass(cls) else None
    if kind_field is None or kind_field.default != kind:
        raise TypeError(
            f"{family} {kind!r} is registered as {cls!r}, which is not a config dataclass with `kind: str = {kind!r}`"
        )


def _check_semantics(recipe: Recipe, v: _Validator) -> None:
    """Checks that need more than one key, or more than the schema knows (a head's margins, a taxonomy file).

    Single values have been range-checked from their field metadata already. Each check here runs only when the
    keys it reads have no problem of their own, so a recipe's every problem is still reported in one pass.
    """
    if v.clean("data.benchmark_pairs_per_group") and recipe.data.benchmark_pairs_per_group % 20:
        pairs = recipe.data.benchmark_pairs_per_group
        v.fail("data.benchmark_pairs_per_group", f"got {pairs} (expected a multiple of 20: 10 folds, half genuine)")
    for key in ("teacher.train", "distill.train"):
        if not v.clean(f"{key}.schedule", f"{key}.step_every"):
            continue
        train = recipe.teacher.train if key.startswith("teacher") else recipe.distill.train
        if train.schedule == "step" and train.step_every < 1:
            v.fail(
                f"{key}.step_every",
                f"got {train.step_every} (expected an integer >= 1 with schedule 'step': the lr halves every "
                "step_every steps)",
                # Left out, the default is missing because of the schedule line: point there.
                at=f"{key}.step_every" if f"{key}.step_every" in v.locs else f"{key}.schedule",
            )
    if v.clean("teacher.head", "teacher.margin"):
        # Each head declares the margins it can train with (see factory.models.heads).
        low, high = getattr(_registry("head").get(recipe.teacher.head), "margin_range", (-math.inf, math.inf))
        margin = recipe.teacher.margin
        if not low <= margin < high:
            v.fail(
                "teacher.margin",
                f"got {margin!r} (expected a number in [{low:g}, {high:.4g}) for head {recipe.teacher.head!r})",
            )
    if v.clean("run_dir") and recipe.run_dir is not None and not recipe.run_dir.strip():
        v.fail("run_dir", "empty (expected a folder for the build, or null for runs/<name>)")
    if v.clean("data.world.taxonomy") and recipe.data.world.taxonomy:
        # Read now, not in the data stage: a typo in the taxonomy should not wait for a build to start.
        from factory.data.world.taxonomy import TaxonomyError, load_taxonomy

        try:
            load_taxonomy(recipe.data.world.taxonomy)
        except (TaxonomyError, OSError) as e:
            v.fail("data.world.taxonomy", f"{e} (expected a group taxonomy)")


def _default_name(recipe: Recipe, path: Path, v: _Validator) -> None:
    """``name`` left empty is the file's stem, which must make a run folder name too."""
    if recipe.name or not v.clean("name"):
        return
    rule = {f.name: f for f in dataclasses.fields(recipe)}["name"].metadata.get("pattern")
    if rule is None or (path.stem and rule[0].fullmatch(path.stem)):
        recipe.name = path.stem
    else:
        v.fail("name", f"not set, and the file's stem {_shown(path.stem)} cannot name a run (expected {rule[1]})")


def _plain_defaults(cls: type) -> dict[str, Any]:
    """The schema's defaults as plain data, union defaults (field metadata ``default``) included."""
    instance, out = cls(), {}
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if "default" in f.metadata:
            out[f.name] = copy.deepcopy(f.metadata["default"])
        elif dataclasses.is_dataclass(value):
            out[f.name] = _plain_defaults(type(value))
        elif isinstance(value, list):
            out[f.name] = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v) for v in value]
        else:
            out[f.name] = copy.deepcopy(value)
    return out


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, merge, override and validate a recipe.

    Args:
        path: the recipe YAML file.
        overrides: ``dotted.key=value`` strings (values parsed as YAML scalars), applied after ``extends``.

    Returns:
        The validated recipe, with paths resolved to absolute paths and ``name`` defaulted to the file stem.

    Raises:
        RecipeError: with every problem found (the first :data:`MAX_ISSUES`), each as ``FILE:LINE: dotted.key:
            message`` or ``--set KEY=VALUE: dotted.key: message``.
    """
    path = Path(path)
    budget = _Budget()
    # The top file is named as the user typed it; fragments by their resolved paths.
    data, locs = _load_with_extends(path.resolve(), (path.resolve(),), budget, shown=str(path))
    override_text, set_issues = _apply_overrides(data, locs, list(overrides or []), _plain_defaults(Recipe), budget)
    validator = _Validator(locs, str(path), override_text)
    validator.issues += set_issues
    recipe = validator.build(Recipe, data, "")
    if recipe is not None:
        _check_semantics(recipe, validator)
        _default_name(recipe, path, validator)
    if validator.issues:
        raise RecipeError(validator.issues)
    return recipe
