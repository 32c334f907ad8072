"""Recipes: typed, strictly validated YAML that describes one build from data to release.

A recipe file is read with ``yaml.safe_load`` semantics only (no tags that build Python objects), may pull in shared
fragments with ``extends:`` (paths relative to the file that says it, merged depth-first, the extending file wins),
and can be overridden from the command line with ``--set dotted.key=value``. Every problem is reported as
``FILE:LINE: dotted.key: what is wrong (what is expected)``, all of them at once, so a user fixes a recipe in one
pass. The resolved recipe (after ``extends`` and overrides) is what stages hash and what gets saved with outputs.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from factory.registry import UnknownNameError

# --------------------------------------------------------------------------------------------------------------
# Schema. Field metadata: {"path": True} marks a file path that must exist (resolved relative to the file that set
# it); {"registry": "model"|"head"} marks a name that must be registered in that family.
# --------------------------------------------------------------------------------------------------------------


@dataclass
class WorldConfig:
    """The built-in procedural face world (used for training, calibration and the default benchmark)."""

    taxonomy: str | None = field(default=None, metadata={"path": True})  # group taxonomy YAML; None = built-in
    seed: int = 0


@dataclass
class DataConfig:
    """What the data stage renders once and caches."""

    world: WorldConfig = field(default_factory=WorldConfig)
    # A real benchmark instead of the procedural one: an insightface verification .bin (one group) or an RFW root
    # (a group per race), with aligned 112x112 images or RFW landmark files.
    benchmark: str | None = field(default=None, metadata={"path": True})
    benchmark_pairs_per_group: int = 600  # procedural, RFW-like: 10 folds, half genuine, half impostor
    calibration_images: int = 300  # for INT8 calibration; identities disjoint from the benchmark
    preview_identities: int = 6
    preview_samples: int = 6


@dataclass
class TrainConfig:
    """One training run of the shared loop (teacher training or distillation)."""

    steps: int = 1000
    batch_size: int = 64
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant", "step"] = "cosine"
    step_every: int = 0  # for schedule "step": halve the lr every this many steps
    checkpoint_every: int = 100
    channels_last: bool = True


@dataclass
class TeacherConfig:
    """The teacher: trained by the build on labelled procedural faces, or loaded from a checkpoint."""

    model: str = field(default="iresnet_nano", metadata={"registry": "model"})
    # Skips training: a factory checkpoint, an insightface state_dict (.pth/.pt) or safetensors file holding weights
    # of `model`, or a black-box ONNX / OpenVINO / TorchScript file.
    checkpoint: str | None = field(default=None, metadata={"path": True})
    normalization: Literal["arcface", "legacy128"] | None = None  # input convention of the checkpoint (None: its own)
    # Labelled training images instead of procedural identities: a RecordIO pack, a labelled folder or a list.
    train_data: str | None = field(default=None, metadata={"path": True})
    identities_per_group: int = 100
    head: str = field(default="cosface", metadata={"registry": "head"})
    margin: float = 0.35
    scale: float = 32.0
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class DistillConfig:
    """Label-free feature distillation of the student on online procedural faces."""

    student: str = field(default="tinyfar_a", metadata={"registry": "model"})
    # Images to distill on instead of online procedural faces: a flat folder, a list or a RecordIO pack.
    data: str | None = field(default=None, metadata={"path": True})
    loss: Literal["mse"] = "mse"
    normalize: bool = False  # SynthDistill uses raw embeddings; QuantFace/MST-KD normalise first
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="cosine")
    )


@dataclass
class ExportConfig:
    """Artifacts produced from the distilled student, each checked against torch."""

    opset: int = 18
    min_parity_cosine: float = 0.999  # every FP32 artifact vs torch, on fixed inputs


@dataclass
class CompressConfig:
    """NNCF post-training INT8 quantization of the OpenVINO FP32 IR."""

    preset: Literal["mixed", "performance"] = "mixed"
    keep_head_float: bool = False
    fast_bias_correction: bool = True


@dataclass
class ValidateConfig:
    """How artifacts are measured."""

    flip: bool = True  # insightface flip fusion
    batch_size: int = 64
    threads: int = 1  # fixed thread count for latency
    latency_warmup: int = 20
    latency_repeats: int = 100


@dataclass
class GatesConfig:
    """Release gates; ``null`` leaves a gate out. Accuracies are fractions (0.9 = 90 %)."""

    min_accuracy: float | None = 0.8  # mean of the per-group accuracies, every artifact
    max_std: float | None = 0.05  # sample std of the per-group accuracies, every artifact
    max_int8_drop: float | None = 0.01  # torch FP32 mean accuracy minus INT8 mean accuracy
    max_latency_ms: float | None = 50.0  # batch-1 median, every exported artifact


@dataclass
class ReleaseConfig:
    """The release bundle."""

    version: str = "0.1.0"
    description: str = ""


@dataclass
class Recipe:
    """One build, from data to release."""

    name: str = ""  # defaults to the recipe file's stem
    seed: int = 0
    threads: int = 2  # torch/NNCF threads for training and evaluation
    run_dir: str | None = None  # default runs/<name>
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the resolved recipe (what is hashed and saved)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The resolved recipe as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


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
        return [_to_python(loader, item, file, f"{prefix}{i}.", locs, issues) for i, item in enumerate(node.value)]
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


def _apply_overrides(data: dict[str, Any], locs: dict[str, Loc], overrides: list[str]) -> dict[str, str]:
    """Set every ``dotted.key=value``; returns the raw text per key (``version=2.0`` is text for a string field)."""
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
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
        raw_text[key] = raw.strip()
        locs[key] = ("--set", 0)
        for sub in [k for k in locs if k.startswith(key + ".")]:
            locs[sub] = ("--set", 0)
    if issues:
        raise RecipeError(issues)
    return raw_text


# --------------------------------------------------------------------------------------------------------------
# Validation against the schema
# --------------------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


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
        if not isinstance(data, dict):
            self.fail(prefix.rstrip("."), f"got {type(data).__name__} (expected a mapping)")
            return cls()
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            dotted = prefix + key
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(dotted, f"unknown key ({hint}expected one of: {', '.join(fields)})")
                continue
            kwargs[key] = self.value(hints[key], value, dotted, fields[key].metadata)
        return cls(**kwargs)

    def value(self, tp: Any, value: Any, dotted: str, meta: Any) -> Any:
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, dotted + ".")
        if origin in (Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.value(inner, value, dotted, meta)
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
            self.fail(dotted, f"got {type(value).__name__} {value!r} (expected {_type_name(tp)})")
            return value
        if tp is float:
            value = float(value)
        if meta.get("path"):
            value = self.resolve_path(dotted, value)
        if meta.get("registry"):
            self.check_name(dotted, meta["registry"], value)
        return value

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


def _registry(family: str) -> Any:
    # Imported here: the model zoo pulls in timm, which `factory --help` should not pay for.
    if family == "model":
        from factory.models.zoo import MODELS

        return MODELS
    if family == "head":
        from factory.models.heads import HEADS

        return HEADS
    raise ValueError(f"no registry for {family!r}")


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
    override_text = _apply_overrides(data, locs, list(overrides or []))
    validator = _Validator(locs, str(path), override_text)
    recipe = validator.build(Recipe, data, "")
    if not validator.issues:
        _check_semantics(recipe, validator)
    if validator.issues:
        raise RecipeError(validator.issues)
    if not recipe.name:
        recipe.name = path.stem
    return recipe
