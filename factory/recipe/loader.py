"""Loading recipes: read (:mod:`factory.recipe.reading`), then validate against the schema, every problem at once.

The resolved recipe (after ``extends`` and overrides) is what stages hash and what gets saved with outputs.

Types the validator understands in a schema dataclass (:mod:`factory.recipe.schema`):

- ``int``, ``float`` (an integer is accepted, and so is text that ``float()`` reads: YAML 1.1 reads ``1e-3`` as a
  string; NaN and infinity never are), ``str``, ``bool``, ``Literal[...]`` and ``X | None``.
- ``X | D`` (``| None`` optional) of one plain type and one dataclass, told apart by how the value is written: a
  mapping is ``D``, anything else ``X`` (a gate is ``0.05`` or ``{limit: 0.05, mode: confidence}``). The field's
  metadata applies to ``X``; ``D``'s fields carry their own.
- Field metadata ``between(...)`` (a number range) and ``matching(...)`` (a string pattern) from
  :mod:`factory.recipe.schema`, checked for every field of every dataclass, union members included.
- A nested dataclass: a mapping, checked key by key; unknown keys get a did-you-mean, fields without a default are
  required. A dataclass may define ``check(self, fail)`` for cross-field checks, calling ``fail(relative_key,
  message)``; it runs once every field has its declared type.
- ``list[X]`` of any of these or of a tagged union: items are located as ``key.0``, ``key.1.sub``; field metadata
  (``path``, ``registry``, ``union``, ``range``, ``pattern``) applies to each item.
- ``dict[str, X]``: a mapping from names (which the schema cannot know, e.g. the taxonomy's groups) to values of
  ``X``, located as ``key.name``; field metadata applies to each value. Checking the names is a semantic check.
- A tagged union: a field annotated ``Any`` (or ``list[Any]``) with metadata ``{"union": FAMILY}``. The value is a
  mapping whose ``kind`` names a config dataclass registered in that family; that dataclass has a field
  ``kind: str`` defaulting to its registered name (so the resolved YAML keeps the kind) and may define
  ``check(self, fail)`` like any dataclass. Its default is given as
  plain data in the metadata, ``{"union": "source", "default": {"kind": "procedural"}}``, and validated like
  written YAML when the recipe leaves the section out: the schema never imports the implementing module.

Families (for ``{"registry": F}`` names and ``{"union": F}`` unions) are declared in :data:`UNION_FAMILIES` and
imported only when a recipe uses them.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from factory.recipe.reading import (
    MAX_ISSUES,
    SET,
    Budget,
    Loc,
    RecipeError,
    RecipeIssue,
    apply_overrides,
    load_with_extends,
)
from factory.recipe.schema import Recipe
from factory.recipe.targets import TargetConfig, known_targets, target_path
from factory.registry import Registry, UnknownNameError

__all__ = ["MAX_ISSUES", "UNION_FAMILIES", "RecipeError", "RecipeIssue", "load_recipe", "load_target"]

# Family -> (module, attribute) of its Registry. Imported lazily: the model zoo pulls in timm, which `factory --help`
# should not pay for. Union families register config dataclasses (see the module docstring).
UNION_FAMILIES: dict[str, tuple[str, str]] = {
    "model": ("factory.models.zoo", "MODELS"),
    "head": ("factory.models.heads", "HEADS"),
    "kd_loss": ("factory.distill.losses", "KD_LOSSES"),
    "adaptor": ("factory.distill.adaptors", "ADAPTORS"),
    "distill_method": ("factory.distill.methods", "DISTILL_METHODS"),
    "source": ("factory.data.sources", "SOURCES"),
    "exporter": ("factory.export.exporters", "EXPORTERS"),
    "compressor": ("factory.compress", "COMPRESSORS"),
    "runtime": ("factory.runtime.runners", "RUNTIMES"),
}


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
        args = typing.get_args(tp)
        # Beside another form, a mapping says which keys it takes: "a number or a mapping (limit, mode, ...)".
        return " or ".join(_type_name(a, meta) + _keys_hint(a, len(args) > 2) for a in args)
    if origin is list:
        return f"a list of {_items_name(_item_type(tp), meta)}"
    if origin is dict:
        return f"a mapping of names to {_items_name(typing.get_args(tp)[1], meta)}"
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


def _keys_hint(tp: Any, alternative: bool) -> str:
    if not (alternative and dataclasses.is_dataclass(tp)):
        return ""
    return f" ({', '.join(f.name for f in dataclasses.fields(tp) if f.init)})"


def _written_as(tp: Any, value: Any) -> bool:
    """Whether ``value`` is written as plain type ``tp`` (before its range is checked)."""
    if tp is float:
        plain = isinstance(value, (int, float)) or (isinstance(value, str) and _float_text(value) is not None)
        return plain and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


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

    def fail(self, dotted: str, message: str, typed: bool = False, at: str | None = None, asset: bool = False) -> None:
        """Report ``message`` about ``dotted``, located at ``at`` (default: ``dotted``).

        ``typed``: the value has its declared type (only its range is off), so checks that read it may still run.
        ``asset``: the problem is a named file that is not there (the recipe may still be sound).
        """
        file, line = self.where(at or dotted)
        self.issues.append(RecipeIssue(file, line, dotted, message, asset=asset))
        self.failed.add(dotted)
        self.type_problems += not typed

    def clean(self, *keys: str) -> bool:
        """Whether none of ``keys`` (nor a section holding one, nor a key inside one) has a problem."""
        return not any(
            f == k or k.startswith(f + ".") or f.startswith(k + ".") or not f for f in self.failed for k in keys
        )

    def build(self, cls: type, data: Any, prefix: str, base: Any = None) -> Any:
        """An instance of dataclass ``cls`` from mapping ``data``, or None when it cannot be built.

        ``base``: the instance the section's own default makes (a distill section's Adam ``train``), which the keys
        written in the recipe change; without it, the class defaults (``TrainConfig``'s SGD).
        """
        if not isinstance(data, dict):
            self.fail(prefix.rstrip("."), f"got {type(data).__name__} (expected a mapping)")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        before = self.type_problems
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
            kwargs[key] = self.value(hints[key], value, dotted, fields[key].metadata, _section_default(fields[key]))
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
            wanted = _range_text(f.metadata, hints[f.name] is int) if "range" in f.metadata else None
            wanted = wanted or _type_name(hints[f.name], f.metadata)
            self.fail(prefix.rstrip("."), f"missing {f.name!r} (expected {wanted})")
        if missing:
            return None
        instance = cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)
        check = getattr(instance, "check", None)
        # Cross-field checks assume every field has its declared type, so they wait for a well-typed instance (a
        # value out of its range is still reported with them).
        if self.type_problems == before and callable(check):
            section = prefix.rstrip(".")

            def fail(key: str, message: str) -> None:
                self.fail(f"{section}.{key}" if key and section else key or section, message)

            check(fail)
        return instance

    def value(self, tp: Any, value: Any, dotted: str, meta: Any, base: Any = None) -> Any:
        origin = typing.get_origin(tp)
        if meta.get("union") and tp is Any:
            return self.member(meta["union"], value, dotted)
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, dotted + ".", base)
        if origin in (Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            options = [a for a in args if a is not type(None)]
            if len(options) == 1:
                return self.value(options[0], value, dotted, meta)
            return self.alternative(tp, options, value, dotted, meta)
        if origin is list:
            if not isinstance(value, list):
                self.fail(dotted, f"{_got(value)} (expected {_type_name(tp, meta)})")
                return value
            return [self.value(_item_type(tp), item, f"{dotted}.{i}", meta) for i, item in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(dotted, f"{_got(value)} (expected {_type_name(tp, meta)})")
                return value
            # Keys are non-empty text already: the reader refuses any other mapping key.
            item_type = typing.get_args(tp)[1]
            return {key: self.value(item_type, item, f"{dotted}.{key}", meta) for key, item in value.items()}
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

    def alternative(self, tp: Any, options: list[Any], value: Any, dotted: str, meta: Any) -> Any:
        """A value of ``X | D``: the dataclass ``D`` when written as a mapping, else the plain type ``X``."""
        structured = [a for a in options if dataclasses.is_dataclass(a)]
        plain = [a for a in options if not dataclasses.is_dataclass(a)]
        if len(structured) != 1 or len(plain) != 1:  # a schema bug, not a recipe problem
            raise TypeError(f"{dotted}: a union must be one plain type and one dataclass (| None), got {tp}")
        if isinstance(value, dict):
            return self.build(structured[0], value, dotted + ".")
        if not _written_as(plain[0], value):
            self.fail(dotted, f"{_got(value)} (expected {_type_name(tp, meta)})")
            return value
        return self.value(plain[0], value, dotted, meta)

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
        return self.build(cls, value, dotted + ".")

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
            self.fail(dotted, f"{path} does not exist (expected an existing file or folder)", typed=True, asset=True)
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


def _section_default(f: dataclasses.Field) -> Any:
    """The instance a nested section's ``default_factory`` makes, when it makes a dataclass (else None)."""
    if f.default_factory is dataclasses.MISSING:
        return None
    made = f.default_factory()
    return made if dataclasses.is_dataclass(made) else None


def _check_member_class(family: str, kind: str, cls: Any) -> None:
    # A schema bug, not a recipe problem: without `kind` defaulting to its name, asdict() would lose the tag.
    kind_field = {f.name: f for f in dataclasses.fields(cls)}.get("kind") if dataclasses.is_dataclass(cls) else None
    if kind_field is None or kind_field.default != kind:
        raise TypeError(
            f"{family} {kind!r} is registered as {cls!r}, which is not a config dataclass with `kind: str = {kind!r}`"
        )


def _check_embedding_sizes(recipe: Recipe, v: _Validator) -> None:
    """A method comparing embeddings directly needs teacher and student of one size.

    Known before any build when the teacher is a zoo model (trained by the build, or its weights in a checkpoint); a
    black-box file's size is checked when the build loads it.
    """
    method = recipe.distill.method
    if not getattr(method, "needs_same_dim", False) or not v.clean(
        "teacher.model", "distill.student", "distill.method"
    ):
        return
    checkpoint = recipe.teacher.checkpoint
    if checkpoint is not None and Path(checkpoint).suffix.lower() in (".onnx", ".xml", ".ts", ".torchscript"):
        return
    from factory.models.catalog import CONTRACTS

    _registry("model")  # the zoo registers every family's contract when imported
    teacher, student = CONTRACTS[recipe.teacher.model].embedding_dim, CONTRACTS[recipe.distill.student].embedding_dim
    if teacher != student:
        v.fail(
            "distill.student",
            f"{recipe.distill.student!r} embeds in {student} dimensions, the teacher {recipe.teacher.model!r} in "
            f"{teacher} (expected equal sizes for distill.method {method.kind}, or a method with an adaptor)",
        )


def _teacher_count(recipe: Recipe) -> int:
    """How many teachers the build has: adopted ones, or what ``teacher.specialists`` trains.

    ``teacher.checkpoints`` adopts one per file; per_group and a null balanced count train one per group of the world.
    """
    teacher = recipe.teacher
    if teacher.checkpoints:
        return len(teacher.checkpoints)
    if teacher.specialists == "none":
        return 1
    if teacher.specialists == "balanced" and teacher.count is not None:
        return teacher.count
    from factory.data.world.taxonomy import load_taxonomy

    return len(load_taxonomy(recipe.data.world.taxonomy))


def _check_teachers(recipe: Recipe, v: _Validator) -> None:
    """A method that distils several teachers needs at least two, and one teacher per group needs identities.

    Single-teacher methods take the first of several teachers, so only a multi-teacher method is checked here.
    """
    keys = (
        "teacher.specialists",
        "teacher.count",
        "teacher.identities_per_group",
        "teacher.checkpoints",
        "teacher.source",
    )
    if not v.clean(*keys, "data.world.taxonomy"):
        return
    teacher, method = recipe.teacher, recipe.distill.method
    count = _teacher_count(recipe)
    procedural = getattr(teacher.source, "kind", None) == "procedural"  # files' identities are counted when read
    if (
        procedural
        and teacher.specialists == "balanced"
        and teacher.count is None
        and count > teacher.identities_per_group
    ):
        v.fail(
            "teacher.identities_per_group",
            f"got {teacher.identities_per_group} for {count} balanced teachers, one per group (expected at least "
            "one identity of every group per teacher)",
        )
    if not getattr(method, "multi_teacher", False) or not v.clean("distill.method"):
        return
    if teacher.checkpoints:
        if count < 2:
            v.fail(
                "distill.method",
                f"{method.kind} distils several teachers, and teacher.checkpoints adopts one: name at least two",
                at="distill.method.kind",
            )
    elif teacher.specialists == "none":
        v.fail(
            "distill.method",
            f"{method.kind} distils several specialised teachers, and teacher.specialists is 'none' (one teacher): "
            "set teacher.specialists to per_group (one teacher per group) or balanced, or adopt pre-trained ones "
            "with teacher.checkpoints",
            at="distill.method.kind",
        )
    elif count < 2:
        v.fail(
            "distill.method",
            f"{method.kind} distils several teachers, and teacher.specialists {teacher.specialists!r} trains one "
            "here (the world has one group): use balanced with teacher.count >= 2",
            at="distill.method.kind",
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
    if v.clean("teacher.head", "teacher.margin_std") and recipe.teacher.margin_std is not None:
        heads = _registry("head")
        if not getattr(heads.get(recipe.teacher.head), "elastic", False):
            elastic = ", ".join(n for n in heads.names() if getattr(heads.get(n), "elastic", False))
            v.fail(
                "teacher.margin_std",
                f"got {recipe.teacher.margin_std!r} for head {recipe.teacher.head!r}, whose margin is fixed "
                f"(expected null, or an elastic head: {elastic})",
            )
    _check_embedding_sizes(recipe, v)
    if v.clean("run_dir") and recipe.run_dir is not None and not recipe.run_dir.strip():
        v.fail("run_dir", "empty (expected a folder for the build, or null for runs/<name>)")
    if v.clean("data.world.taxonomy") and recipe.data.world.taxonomy:
        # Read now, not in the data stage: a typo in the taxonomy should not wait for a build to start.
        from factory.data.world.taxonomy import TaxonomyError, load_taxonomy

        try:
            load_taxonomy(recipe.data.world.taxonomy)
        except (TaxonomyError, OSError) as e:
            v.fail("data.world.taxonomy", f"{e} (expected a group taxonomy)")
    difficulty = recipe.data.world.difficulty
    # Only the names are read: a group's bad value is its own problem, and a misspelt group is still worth a line.
    if v.clean("data.world.taxonomy") and isinstance(difficulty, dict) and difficulty:
        from factory.data.world.taxonomy import load_taxonomy

        known = [g.name for g in load_taxonomy(recipe.data.world.taxonomy)]  # readable: checked just above
        for name in difficulty:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                v.fail(f"data.world.difficulty.{name}", f"unknown group ({hint}the taxonomy has: {', '.join(known)})")
    _check_teachers(recipe, v)  # after the taxonomy's own check: it counts the taxonomy's groups
    _check_targets(recipe, v)
    _check_goals(recipe, v)
    if v.clean("release.licences", "release.commercial_use"):
        from factory.recipe.inputs import licence_problems

        for key, message in licence_problems(recipe):
            v.fail(key, message)


def _check_goals(recipe: Recipe, v: _Validator) -> None:
    """A goal measured on a target names one the recipe deploys to."""
    if not v.clean("deploy.targets"):
        return
    names = [Path(t).stem for t in recipe.deploy.targets]
    for i, goal in enumerate(recipe.gates.goals):
        if goal.target is not None and goal.target not in names:
            listed = ", ".join(names) or "none"
            v.fail(f"gates.goals.{i}.target", f"got {goal.target!r} (expected one of deploy.targets: {listed})")


def _check_targets(recipe: Recipe, v: _Validator) -> None:
    """Each target file is read and checked now (its problems located in it); entries become absolute paths."""
    if not v.clean("deploy.targets"):
        return
    names = []
    for i, entry in enumerate(recipe.deploy.targets):
        key = f"deploy.targets.{i}"
        file, line = v.where(key)
        base = Path.cwd() if file.startswith(SET) else Path(file).parent
        problems = target_issues(entry, base, (file, line), key)
        v.issues += problems
        if problems:
            v.failed.add(key)
        recipe.deploy.targets[i] = str(target_path(entry, base))
        names.append(Path(recipe.deploy.targets[i]).stem)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        v.fail("deploy.targets", f"{', '.join(twice)} listed twice (expected each target once)")


def load_target(path: str | Path) -> TargetConfig:
    """Read and check one target file.

    Raises:
        RecipeError: every problem, as ``FILE:LINE: key: message``.
        FileNotFoundError: no such file (the message lists the factory's own targets).

    """
    path = Path(path)
    if not path.is_file():
        close = difflib.get_close_matches(path.stem, known_targets(), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise FileNotFoundError(
            f"{path}: no such target file ({hint}the factory's targets: {', '.join(known_targets())}; "
            "or give a path to a target YAML)"
        )
    data, locs = load_with_extends(path.resolve(), (path.resolve(),), Budget(), shown=str(path))
    validator = _Validator(locs, str(path))  # the recipe's rules and located errors
    target = validator.build(TargetConfig, data, "")
    if validator.issues:
        raise RecipeError(validator.issues)
    if not target.name:
        target.name = path.stem
    return target


def target_issues(entry: str, base: Path, where: tuple[str, int], key: str) -> list[RecipeIssue]:
    """The problems of a recipe's target entry: its file's own, or one line at ``where`` when it cannot be read."""
    path = target_path(entry, base)
    try:
        load_target(path)
    except RecipeError as e:
        return list(e.issues)
    except (FileNotFoundError, OSError) as e:
        return [RecipeIssue(where[0], where[1], key, str(e))]
    return []


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
    budget = Budget()
    # The top file is named as the user typed it; fragments by their resolved paths.
    data, locs = load_with_extends(path.resolve(), (path.resolve(),), budget, shown=str(path))
    override_text, set_issues = apply_overrides(data, locs, list(overrides or []), _plain_defaults(Recipe), budget)
    validator = _Validator(locs, str(path), override_text)
    validator.issues += set_issues
    recipe = validator.build(Recipe, data, "")
    if recipe is not None:
        _check_semantics(recipe, validator)
        _default_name(recipe, path, validator)
    if validator.issues:
        raise RecipeError(validator.issues)
    return recipe
