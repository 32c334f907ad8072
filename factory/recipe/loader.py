"""Loading recipes: located YAML, ``extends``, ``--set`` overrides and validation against the schema.

A recipe file is read with ``yaml.safe_load`` semantics only (no tags that build Python objects), may pull in shared
fragments with ``extends:`` (paths relative to the file that says it, merged depth-first, the extending file wins;
mappings merge key by key, anything else, lists included, is replaced whole), and can be overridden from the command
line with ``--set dotted.key=value``. Every problem is reported as ``FILE:LINE: dotted.key: what is wrong (what is
expected)``, all of them at once, so a user fixes a recipe in one pass. The resolved recipe (after ``extends`` and
overrides) is what stages hash and what gets saved with outputs.

Types the validator understands in a schema dataclass (:mod:`factory.recipe.schema`):

- ``int``, ``float`` (an integer is accepted), ``str``, ``bool``, ``Literal[...]`` and ``X | None``.
- A nested dataclass: a mapping, checked key by key; unknown keys get a did-you-mean, fields without a default are
  required.
- ``list[X]`` of any of these or of a tagged union: items are located as ``key.0``, ``key.1.sub``; field metadata
  (``path``, ``registry``, ``union``) applies to each item.
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

# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeIssue:
    """One problem in a recipe, located."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key or '<top>'}: {self.message}"


class RecipeError(ValueError):
    """A recipe that cannot be used; ``issues`` holds every problem found."""

    def __init__(self, issues: list[RecipeIssue]) -> None:
        # In reading order, file by file (the order of discovery follows the schema, not the file).
        self.issues = sorted(issues, key=lambda i: (i.file, i.line))
        super().__init__("\n".join(str(i) for i in self.issues))


Loc = tuple[str, int]  # (file, line)


# --------------------------------------------------------------------------------------------------------------
# Reading YAML with locations
# --------------------------------------------------------------------------------------------------------------


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}


def _read_yaml(path: Path) -> tuple[Any, dict[str, Loc]]:
    """Parse one YAML file into plain data plus the (file, line) of every dotted key."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([RecipeIssue(shown, 0, "", "file not found (expected a recipe YAML file)")]) from None
    except OSError as e:
        raise RecipeError([RecipeIssue(shown, 0, "", f"cannot read: {e.strerror}")]) from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        raise RecipeError([RecipeIssue(shown, line, "", f"not valid YAML: {e.problem}")]) from None
    finally:
        loader.dispose()
    locs: dict[str, Loc] = {}
    issues: list[RecipeIssue] = []
    data = {} if root is None else _to_python(loader, root, shown, "", locs, issues)
    if issues:
        raise RecipeError(issues)
    return data, locs


def _to_python(
    loader: yaml.SafeLoader, node: yaml.Node, file: str, prefix: str, locs: dict[str, Loc], issues: list[RecipeIssue]
) -> Any:
    if node.tag not in _PLAIN_TAGS:  # e.g. !!python/object/apply on a list: refused before anything is built
        issues.append(
            RecipeIssue(
                file,
                node.start_mark.line + 1,
                prefix.rstrip("."),
                f"tag {node.tag!r} is not allowed (recipes are plain data)",
            )
        )
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if not isinstance(key, str) or not key:
                issues.append(RecipeIssue(file, line, prefix.rstrip("."), "keys must be non-empty strings"))
                continue
            dotted = prefix + key
            if key in out:
                issues.append(RecipeIssue(file, line, dotted, "duplicate key (each key may appear once)"))
            locs[dotted] = (file, line)
            out[key] = _to_python(loader, value_node, file, dotted + ".", locs, issues)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            # The item's own line, not the list key's: in a block list each item sits on a line of its own.
            locs[f"{prefix}{i}"] = (file, item.start_mark.line + 1)
            items.append(_to_python(loader, item, file, f"{prefix}{i}.", locs, issues))
        return items
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as e:
        issues.append(
            RecipeIssue(file, node.start_mark.line + 1, prefix.rstrip("."), f"{e.problem} (recipes are plain data)")
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


def _load_with_extends(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, Loc]]:
    data, locs = _read_yaml(path)
    if not isinstance(data, dict):
        raise RecipeError([RecipeIssue(str(path), 1, "", "a recipe must be a mapping of keys to values")])
    extends = data.pop("extends", None)
    if extends is None:
        return data, locs
    line = locs.pop("extends")[1]
    parents = [extends] if isinstance(extends, str) else extends
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise RecipeError([RecipeIssue(str(path), line, "extends", "must be a path or a list of paths")])
    merged: dict[str, Any] = {}
    merged_locs: dict[str, Loc] = {}
    for parent in parents:
        parent_path = (path.parent / parent).resolve()
        if parent_path in seen:
            raise RecipeError([RecipeIssue(str(path), line, "extends", f"cycle: {parent} extends this file again")])
        if not parent_path.is_file():
            raise RecipeError(
                [RecipeIssue(str(path), line, "extends", f"{parent_path} not found (expected a recipe fragment)")]
            )
        pdata, plocs = _load_with_extends(parent_path, (*seen, parent_path))
        merged = _merge(merged, pdata)
        merged_locs.update(plocs)
    for k in [k for k in locs if k.split(".")[0] in data]:
        merged_locs[k] = locs[k]
    return _merge(merged, data), merged_locs


# --------------------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------------------


def _apply_overrides(
    data: dict[str, Any], locs: dict[str, Loc], overrides: list[str], defaults: dict[str, Any] | None = None
) -> dict[str, str]:
    """Set every ``dotted.key=value``; returns the raw text per key (``version=2.0`` is text for a string field).

    ``defaults`` is the schema's default recipe as plain data: indexing a list that the files leave out starts
    from its default items.
    """
    issues, raw_text = [], {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            issues.append(RecipeIssue("--set", 0, item, "expected dotted.key=value"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        problem = _set_path(data, locs, key.split("."), value, defaults)
        if problem:
            issues.append(RecipeIssue("--set", 0, *problem))
            continue
        raw_text[key] = raw.strip()
        _mark_set(locs, key)
    if issues:
        raise RecipeError(issues)
    return raw_text


def _set_path(
    data: dict[str, Any], locs: dict[str, Loc], parts: list[str], value: Any, defaults: Any
) -> tuple[str, str] | None:
    """Put ``value`` at ``parts`` inside ``data``, making mappings on the way; ``(key, problem)`` if it cannot."""
    node: Any = data
    default = defaults
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit():
                return here, f"expected a list index, got {part!r} (list has {_count(len(node))})"
            index = int(part)
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
            if not last and part not in node and isinstance(child_default, list) and parts[depth + 1].isdigit():
                node[part] = copy.deepcopy(child_default)
                _mark_set(locs, here)
        if last:
            node[key] = value
            return None
        child = node[key] if isinstance(node, list) else node.get(key)
        if not isinstance(child, dict | list):
            child = node[key] = {}
            _mark_set(locs, here)  # a mapping this override made: its own problems (a missing kind) are the --set's
        node, default = child, child_default
    return None


def _mark_set(locs: dict[str, Loc], key: str) -> None:
    locs[key] = ("--set", 0)
    for sub in [k for k in locs if k.startswith(key + ".")]:
        locs[sub] = ("--set", 0)


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
    return f"got {type(value).__name__} {value!r}"


class _Validator:
    def __init__(self, locs: dict[str, Loc], root_file: str, override_text: dict[str, str] | None = None) -> None:
        self.locs = locs
        self.override_text = override_text or {}
        self.root_file = root_file
        self.issues: list[RecipeIssue] = []

    def where(self, dotted: str) -> Loc:
        probe = dotted
        while probe:
            if probe in self.locs:
                return self.locs[probe]
            probe = probe.rpartition(".")[0]
        return (self.root_file, 1)

    def fail(self, dotted: str, message: str) -> None:
        file, line = self.where(dotted)
        self.issues.append(RecipeIssue(file, line, dotted, message))

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
                self.fail(dotted, f"got {value!r} (expected {_type_name(tp)})")
            return value
        if tp is str and dotted in self.override_text and isinstance(value, (int, float)):
            value = self.override_text[dotted]  # --set release.version=2.0 means the text "2.0"
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
            value = float(value)
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
        before = len(self.issues)
        member = self.build(cls, value, dotted + ".")
        check = getattr(member, "check", None)
        # Cross-field checks assume every field has its declared type, so they wait for a clean member.
        if len(self.issues) == before and callable(check):

            def fail(key: str, message: str) -> None:
                self.fail(f"{dotted}.{key}" if key else dotted, message)

            check(fail)
        return member

    def resolve_path(self, dotted: str, value: str) -> str:
        file, _ = self.where(dotted)
        base = Path.cwd() if file == "--set" else Path(file).parent
        path = (base / value).resolve()
        if not path.exists():
            self.fail(dotted, f"{path} does not exist (expected an existing file)")
        return str(path)

    def check_name(self, dotted: str, family: str, name: str) -> None:
        try:
            _registry(family).get(name)
        except UnknownNameError as e:
            self.fail(dotted, e.message)


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
    """Checks that need more than one key or a value range."""
    positive = {
        "data.benchmark_pairs_per_group": recipe.data.benchmark_pairs_per_group,
        "data.calibration_images": recipe.data.calibration_images,
        "teacher.identities_per_group": recipe.teacher.identities_per_group,
        "teacher.train.steps": recipe.teacher.train.steps,
        "teacher.train.batch_size": recipe.teacher.train.batch_size,
        "distill.train.steps": recipe.distill.train.steps,
        "distill.train.batch_size": recipe.distill.train.batch_size,
        "threads": recipe.threads,
        "validate.threads": recipe.validate.threads,
        "validate.latency_repeats": recipe.validate.latency_repeats,
    }
    for key, value in positive.items():
        if isinstance(value, int) and value <= 0:
            v.fail(key, f"got {value} (expected a positive integer)")
    pairs = recipe.data.benchmark_pairs_per_group
    if isinstance(pairs, int) and pairs > 0 and pairs % 20:
        v.fail("data.benchmark_pairs_per_group", f"got {pairs} (expected a multiple of 20: 10 folds, half genuine)")
    for key in ("teacher.train", "distill.train"):
        train = recipe.teacher.train if key.startswith("teacher") else recipe.distill.train
        if train.schedule == "step" and train.step_every <= 0:
            v.fail(f"{key}.step_every", "schedule 'step' needs step_every > 0")


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
        RecipeError: with every problem found, each as ``FILE:LINE: dotted.key: message``.
    """
    path = Path(path)
    data, locs = _load_with_extends(path.resolve(), (path.resolve(),))
    # Report locations with the path as the user typed it for the top file.
    locs = {k: (str(path) if f == str(path.resolve()) else f, line) for k, (f, line) in locs.items()}
    override_text = _apply_overrides(data, locs, list(overrides or []), _plain_defaults(Recipe))
    validator = _Validator(locs, str(path), override_text)
    recipe = validator.build(Recipe, data, "")
    if not validator.issues:
        _check_semantics(recipe, validator)
    if validator.issues:
        raise RecipeError(validator.issues)
    if not recipe.name:
        recipe.name = path.stem
    return recipe
