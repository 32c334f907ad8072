"""The recipe schema: one dataclass per section, with field metadata that the loader checks.

Field metadata understood by :mod:`factory.recipe.loader`:

- ``{"path": True}``: a file path that must exist, resolved relative to the file that set it. It is an input the user
  supplied, whose licence the release records (:func:`factory.recipe.inputs.supplied_inputs`), unless the metadata
  also has ``"licensed": False`` (a file of settings the user writes: a taxonomy, a key).
- ``{"registry": FAMILY}``: a name that must be registered in that family (``"model"``, ``"head"``).
- ``{"union": FAMILY}`` on a field annotated ``Any`` (or ``list[Any]``): a tagged union, a mapping whose ``kind``
  names a config dataclass registered in that family.
- ``between(gt=, ge=, lt=, le=)``: the range of a number (``{"range": Range(...)}``), e.g.
  ``field(default=0.1, metadata=between(gt=0))``; a bound may be a function called when the recipe is checked
  (the CPUs this process may use, the opsets the installed exporter writes).
- ``matching(PATTERN, WHAT)``: a string that must match a regular expression (``{"pattern": ...}``).

Metadata applies to every item of a ``list[X]`` field, and to the value of an ``X | None`` field when it is not
null. Every ``float`` must be finite whatever its range. Checks that involve more than one field live in the
loader's ``_check_semantics`` or in a union member's ``check`` hook.

Families are declared in :data:`factory.recipe.loader.UNION_FAMILIES`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

Bound = float | Callable[[], float] | None


@dataclass(frozen=True)
class Range:
    """Bounds of a number field, checked by the loader for every value it reads (see :func:`between`)."""

    gt: Bound = None
    ge: Bound = None
    lt: Bound = None
    le: Bound = None
    note: str = ""  # why the bounds are what they are; ``{low}`` and ``{high}`` are replaced by their values

    def bounds(self) -> tuple[float | None, ...]:
        """``(gt, ge, lt, le)``, a bound given as a function evaluated now."""
        return tuple(b() if callable(b) else b for b in (self.gt, self.ge, self.lt, self.le))

    def admits(self, value: float) -> bool:
        """Whether ``value`` is finite and inside the range."""
        gt, ge, lt, le = self.bounds()
        return (
            math.isfinite(value)
            and (gt is None or value > gt)
            and (ge is None or value >= ge)
            and (lt is None or value < lt)
            and (le is None or value <= le)
        )

    def describe(self, integer: bool) -> str:
        """The expectation as a user reads it: ``a number > 0``, ``an integer >= 1``, ``a number in [0, 1)``."""
        gt, ge, lt, le = self.bounds()
        what = "an integer" if integer else "a number"
        low = gt if gt is not None else ge
        high = lt if lt is not None else le
        if low is not None and high is not None:
            opens, closes = "(" if gt is not None else "[", ")" if lt is not None else "]"
            text = f"{what} in {opens}{_show(low)}, {_show(high)}{closes}"
        elif low is not None:
            text = f"{what} {'>' if gt is not None else '>='} {_show(low)}"
        elif high is not None:
            text = f"{what} {'<' if lt is not None else '<='} {_show(high)}"
        else:
            text = f"a finite {'integer' if integer else 'number'}"
        return f"{text}: {self.note.format(low=_show(low), high=_show(high))}" if self.note else text


def _show(bound: float | None) -> str:
    if isinstance(bound, int) and bound >= 2**32 and (bound + 1).bit_count() == 1:
        return f"2**{(bound + 1).bit_length() - 1} - 1"  # 2**64 - 1 reads better than its 20 digits
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def between(*, gt: Bound = None, ge: Bound = None, lt: Bound = None, le: Bound = None, note: str = "") -> dict:
    """Field metadata for a number range: ``field(default=0.9, metadata=between(ge=0, lt=1))``.

    A bound may be a function with no arguments, called when a recipe is checked; ``note`` then says what it
    stands for (``"{high} is the number of CPUs this process may use"``). The loader reports a value outside the
    range as ``got 0 (expected a number > 0)``.
    """
    return {"range": Range(gt, ge, lt, le, note)}


def matching(pattern: str, what: str) -> dict:
    """Field metadata for a string that must match ``pattern`` fully; ``what`` is the expectation users read."""
    return {"pattern": (re.compile(pattern), what)}


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# A run's folder is runs/<name>: one safe path component, never hidden, never `..`.
RUN_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
RUN_NAME_EXPECTED = (
    "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100 characters: "
    "it names the folder runs/<name>"
)
# An adopted teacher's name: its artifact is teacher_<name>, its file teacher_<name>.pt in the stage's folder.
TEACHER_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
TEACHER_NAME_TEXT = "lower-case letters, digits and '_', starting with a letter or digit, at most 64 characters"
_THREADS = between(ge=1, le=usable_cpus, note="{high} is the number of CPUs this process may use")
# torch.manual_seed takes unsigned 64-bit seeds; numpy and the hashed seeds take any of them too.
_SEED = between(ge=0, le=2**64 - 1)
_FRACTION = between(ge=0, le=1)


@dataclass
class GroupDifficulty:
    """How much harder one group of the world is made, on top of what the taxonomy declares for it.

    Each default leaves the group as the taxonomy has it; see
    :func:`factory.data.world.taxonomy.apply_difficulty` for how a change combines with the taxonomy.
    """

    # multiplies every capture nuisance strength of the group (pose, lighting, noise, ...)
    nuisance: float = field(default=1.0, metadata=between(ge=0, le=4, note="the renderer caps a strength at 4"))
    # multiplies the spread between the group's identities (< 1: its people look more alike)
    identity_spread: float = field(default=1.0, metadata=between(gt=0, le=4))
    # an extra per-image jitter of each identity attribute, as a fraction of the typical spread between identities
    within_identity: float = field(default=0.0, metadata=between(ge=0, le=4, note="the renderer caps it at 4"))


@dataclass
class WorldConfig:
    """The built-in procedural face world (used for training, calibration and the default benchmark)."""

    taxonomy: str | None = field(
        default=None, metadata={"path": True, "licensed": False}
    )  # group taxonomy YAML; None = built-in
    seed: int = field(default=0, metadata=_SEED)
    # group name -> how much harder it is made, e.g. {gamma: {nuisance: 1.5, identity_spread: 0.7}}: a world whose
    # bias is known, so per-group accuracy and fairness measures can be checked against it
    difficulty: dict[str, GroupDifficulty] = field(default_factory=dict)


@dataclass
class CalibrationConfig:
    """The INT8 calibration faces (:mod:`factory.data.calibration`): never benchmark faces, balanced over groups."""

    # Any training source without labels: procedural (the default: fresh identities of their own split), stylegan,
    # files (a flat folder, list or RecordIO pack; with groups for balance: equal), procedural_set, mix,
    # real_synthetic. Kinds: factory.data.sources.SOURCES.
    source: Any = field(default=None, metadata={"union": "source", "default": {"kind": "procedural"}})
    # distinct faces; below 300 (QuantFace's and NNCF's size) check and build warn: few faces clip rare activations
    images: int = field(default=300, metadata=between(ge=1))
    # equal: the same number of faces from every group of the world (the source must know groups); source: as drawn
    balance: Literal["equal", "source"] = "equal"
    seed: int | None = field(default=None, metadata=_SEED)  # null: the recipe's seed


@dataclass
class DataConfig:
    """What the data stage renders once and caches."""

    world: WorldConfig = field(default_factory=WorldConfig)
    # A real benchmark instead of the procedural one: an insightface verification .bin (one group) or an RFW root
    # (a group per race), with aligned 112x112 images or RFW landmark files.
    benchmark: str | None = field(default=None, metadata={"path": True})
    # procedural, RFW-like: 10 folds, half genuine, half impostor
    benchmark_pairs_per_group: int = field(default=600, metadata=between(ge=1))
    # the faces INT8 ranges are fitted on (the data stage proves none is a benchmark face)
    calibration: CalibrationConfig = field(default_factory=lambda: CalibrationConfig())
    preview_identities: int = field(default=6, metadata=between(ge=1))
    preview_samples: int = field(default=6, metadata=between(ge=1))


@dataclass
class TrainConfig:
    """One training run of the shared loop (teacher training or distillation)."""

    steps: int = field(default=1000, metadata=between(ge=1))
    # At least 2: BatchNorm in training mode cannot normalise one sample (iresnet's embedding BatchNorm1d raises).
    batch_size: int = field(default=64, metadata=between(ge=2))
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = field(default=0.1, metadata=between(gt=0))
    weight_decay: float = field(default=5e-4, metadata=between(ge=0))
    momentum: float = field(default=0.9, metadata=between(ge=0, lt=1))  # 1 never forgets a gradient
    nesterov: bool = False  # sgd only, with momentum > 0 (Nesterov's look-ahead follows the momentum)
    warmup_steps: int = field(default=0, metadata=between(ge=0))
    # After the warm-up: "cosine" to 0 at `steps`, "constant", "step" (x gamma every step_every steps) or
    # "multistep" (x gamma at each of `milestones`: the papers' x0.1 at fixed epochs, e.g. QUD's 8/14/20/25).
    schedule: Literal["cosine", "constant", "step", "multistep"] = "cosine"
    # for schedule "step": decay the lr every this many steps (0: unset; "step" then needs >= 1)
    step_every: int = field(default=0, metadata=between(ge=0))
    # for schedule "multistep": the steps (0-based, strictly increasing, each < steps) from which the lr is multiplied
    # by gamma once more
    milestones: list[int] = field(default_factory=list, metadata=between(ge=1))
    # the factor of each decay of "step" or "multistep"; null is the schedule's own: 0.5 for "step" (halving, as
    # SynthDistill's code), 0.1 for "multistep" (as the margin-loss and QUD papers)
    gamma: float | None = field(default=None, metadata=between(gt=0, le=1))
    # Clip the gradient norm of the model's and the task's parameters to this before each step (MST-KD: 5); null:
    # no clipping. The norm before clipping is logged as the term "grad_norm".
    grad_clip_norm: float | None = field(default=None, metadata=between(gt=0))
    checkpoint_every: int = field(default=100, metadata=between(ge=1))  # the loop saves when step % this == 0
    channels_last: bool = True
    # loss terms, lr and throughput as TensorBoard scalars under the stage's work_dir/tensorboard/<stage> (needs the
    # tensorboard package; without it the build says so once and trains on)
    tensorboard: bool = True
    # Where the loop trains: cpu (the default: a build reproduces on any machine), cuda (refused when the machine has
    # none), or auto (cuda when there is one). `factory build --nproc N` trains with N processes on it (DDP).
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    # Mixed precision of the forward pass (torch.autocast): none (fp32), bf16 (CPU or GPU) or fp16 (GPU only, with
    # loss scaling). The backward pass and the optimiser step stay in fp32 weights either way.
    amp: Literal["none", "bf16", "fp16"] = "none"

    def check(self, fail: Callable[[str, str], None]) -> None:
        """Settings that only mean something together: a schedule and its keys, Nesterov and its momentum.

        A key the chosen schedule or optimiser would ignore is an error, not a silent no-op: the recipe would say
        one thing and the run do another.
        """
        if self.schedule == "multistep":
            ordered = all(a < b for a, b in zip(self.milestones, self.milestones[1:], strict=False))
            if not self.milestones:
                fail("milestones", "empty (expected the steps at which schedule 'multistep' multiplies the lr)")
            elif not ordered:
                fail("milestones", f"got {self.milestones} (expected strictly increasing steps)")
            elif self.steps >= 1 and self.milestones[-1] >= self.steps:
                fail(
                    "milestones",
                    f"got {self.milestones} (expected each < steps = {self.steps}: the run ends before a later one)",
                )
        elif self.milestones:
            fail(
                "milestones",
                f"got {self.milestones} with schedule {self.schedule!r} (expected [], or schedule 'multistep')",
            )
        if self.gamma is not None and self.schedule not in ("step", "multistep"):
            fail(
                "gamma",
                f"got {self.gamma!r} with schedule {self.schedule!r} (expected null, or schedule 'step' or "
                "'multistep')",
            )
        if self.amp == "fp16" and self.device == "cpu":
            # The CPU's half precision is bf16: fp32's range (no loss scaling), and few CPU kernels run fp16 fast.
            fail("amp", "fp16 with device 'cpu' (expected bf16 or none on the CPU, or device 'cuda' / 'auto')")
        if self.nesterov and self.optimizer != "sgd":
            fail("nesterov", f"true with optimizer {self.optimizer!r} (expected false, or optimizer 'sgd')")
        elif self.nesterov and self.momentum == 0:
            fail("nesterov", "true with momentum 0 (expected false, or momentum > 0: Nesterov's step follows it)")


@dataclass
class TeacherConfig:
    """The teacher: trained by the build on labelled procedural faces, or loaded from a checkpoint."""

    model: str = field(default="iresnet_nano", metadata={"registry": "model"})
    # Skips training: a factory checkpoint, an insightface state_dict (.pth/.pt) or safetensors file holding weights
    # of `model`, or a black-box ONNX / OpenVINO / TorchScript file.
    checkpoint: str | None = field(default=None, metadata={"path": True})
    # Several pre-trained teachers instead (MST-KD's specialists, trained elsewhere): {name: file, ...}, each file
    # adopted like `checkpoint` (weights of `model`, or a black box) as artifact teacher_<name>, in the order written
    # (the order MST-KD concatenates their embeddings in). Names: lower-case letters, digits and _.
    checkpoints: dict[str, str] | None = field(default=None, metadata={"path": True})
    normalization: Literal["arcface", "legacy128"] | None = None  # input convention of the checkpoint (None: its own)
    # Labelled training data: procedural identities, or {kind: files, path: ...} (a RecordIO pack, a labelled
    # folder or a list). Kinds: factory.data.sources.SOURCES.
    source: Any = field(default=None, metadata={"union": "source", "default": {"kind": "procedural"}})
    identities_per_group: int = field(default=100, metadata=between(ge=1))  # procedural source
    head: str = field(default="cosface", metadata={"registry": "head"})
    margin: float = 0.35  # its range depends on the head (checked with it)
    # Elastic heads only (elastic_arcface, elastic_cosface and their _plus): σ of the per-sample margins
    # mᵢ ~ N(margin, σ); null: the head's default, 0.05.
    margin_std: float | None = field(default=None, metadata=between(ge=0))
    scale: float = field(default=32.0, metadata=between(gt=0))
    train: TrainConfig = field(default_factory=TrainConfig)
    # Several teachers (MST-KD, seed 001) instead of one, on the procedural source or labelled files with groups
    # (BUPT's <race>/<identity>/ folders renamed by group_mapping, a list's group column, or group_mapping
    # identity,group lines). per_group: one specialist per group of the world, trained on that group's identities
    # only (artifacts teacher_<group>, in the world's group order). balanced: `count`
    # teachers (null: one per group), each on an equal, disjoint share of every group's identities (teacher_0, ...;
    # the paper's baseline). Either way the teachers together see the identities one teacher would, and each trains
    # for train.steps with its own seed. Kinds: factory.train.specialists.SPECIALISTS.
    specialists: Literal["none", "per_group", "balanced"] = "none"
    count: int | None = field(default=None, metadata=between(ge=2))  # balanced only

    def check(self, fail: Callable[[str, str], None]) -> None:
        """Several teachers are trained on procedural identities or adopted; ``count`` is for balanced ones."""
        if self.count is not None and self.specialists != "balanced":
            fail("count", f"got {self.count} with specialists {self.specialists!r} (expected null, or 'balanced')")
        if self.checkpoints is not None:
            self._check_checkpoints(fail)
        adopted = self.checkpoint is not None or self.checkpoints is not None
        if self.specialists == "none" and not adopted and getattr(self.source, "group_mapping", None) is not None:
            fail(
                "source.group_mapping",
                "gives the files' identities groups for teacher.specialists, and one teacher is trained on all of "
                "them (expected no group_mapping, or specialists: per_group or balanced)",
            )
        if self.specialists == "none":
            return
        if self.checkpoint is not None:
            fail(
                "specialists",
                f"{self.specialists!r} trains several teachers, and teacher.checkpoint adopts one (expected "
                "specialists: none with a checkpoint, or no checkpoint)",
            )
        kind = getattr(self.source, "kind", None)
        if kind not in ("procedural", "files"):
            fail(
                "specialists",
                f"{self.specialists!r} deals identities to teachers by group, which only the procedural source and "
                f"labelled files with groups know; teacher.source is {kind!r} (expected {{kind: procedural}}, "
                "{kind: files, path: ...} with groups, or specialists: none)",
            )
        # Files' identities are counted when they are read; the procedural source's are the recipe's.
        if kind == "procedural" and self.count is not None and self.count > self.identities_per_group:
            fail(
                "count",
                f"got {self.count} balanced teachers for identities_per_group {self.identities_per_group} (expected "
                "at most one teacher per identity of a group: each needs identities of every group)",
            )

    def _check_checkpoints(self, fail: Callable[[str, str], None]) -> None:
        """Adopted teachers are one way to get several: not beside ``checkpoint`` or ``specialists``."""
        if not self.checkpoints:
            fail("checkpoints", "got an empty mapping (expected {name: file, ...}, or null)")
        if self.checkpoint is not None:
            fail(
                "checkpoints",
                "adopts several teachers, and teacher.checkpoint adopts one (expected one of the two: "
                "checkpoint for one teacher, checkpoints for several)",
            )
        if self.specialists != "none":
            fail(
                "checkpoints",
                f"adopts pre-trained teachers, and specialists {self.specialists!r} trains them (expected "
                "specialists: none with checkpoints, or no checkpoints)",
            )
        for name in self.checkpoints or {}:
            if not TEACHER_NAME.fullmatch(name):
                fail(
                    f"checkpoints.{name}",
                    f"got the name {name!r} (expected {TEACHER_NAME_TEXT}: it names the artifact teacher_{{name}})",
                )


@dataclass
class DistillConfig:
    """Label-free feature distillation of the student on online procedural faces."""

    student: str = field(default="tinyfar_a", metadata={"registry": "model"})
    # What to distill on: online procedural faces, {kind: files, path: ...} (a flat folder, a list or a RecordIO
    # pack), {kind: stylegan, ...}, {kind: mix, sources: [...], weights: [...]} or {kind: real_synthetic, real: ...,
    # synthetic: ..., real_share: 0.7} (the ratio inside every group). Kinds: factory.data.sources.
    source: Any = field(default=None, metadata={"union": "source", "default": {"kind": "procedural"}})
    # How the student learns from the teacher: {kind: feature_kd, loss: mse, normalize: false} (SynthDistill's raw
    # MSE; QuantFace and MST-KD normalise first). Kinds: factory.distill.methods.DISTILL_METHODS.
    method: Any = field(default=None, metadata={"union": "distill_method", "default": {"kind": "feature_kd"}})
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="cosine")
    )
    # Memory for the teacher's embeddings of static data (files, a procedural_set, a real/synthetic mix's real part:
    # each image and flip is embedded once; 2 KiB per 512-d embedding); 0 caches none, with the same results.
    teacher_cache_mb: int = field(default=1024, metadata=between(ge=0))


@dataclass
class ExportConfig:
    """Artifacts produced from the distilled student, each checked against torch."""

    # In order; each may convert an earlier one. Kinds: factory.export.exporters.EXPORTERS.
    formats: list[Any] = field(
        default=None, metadata={"union": "exporter", "default": [{"kind": "onnx", "opset": 18}, {"kind": "openvino"}]}
    )
    # every exported artifact vs torch, on fixed inputs
    min_parity_cosine: float = field(default=0.999, metadata=between(gt=0, le=1))


@dataclass
class CompressConfig:
    """Compression of exported artifacts: NNCF post-training INT8 of the OpenVINO FP32 IR and of the ONNX FP32 model."""

    # Each derives an artifact from one the build has. Kinds: factory.compress.COMPRESSORS.
    methods: list[Any] = field(default=None, metadata={"union": "compressor", "default": [{"kind": "openvino_ptq"}]})
    # held-out benchmark faces per group on which each compressed artifact's drift from its parent is measured
    drift_images_per_group: int = field(default=64, metadata=between(ge=1))


@dataclass
class ValidateConfig:
    """How artifacts are measured."""

    flip: bool = True  # insightface flip fusion
    batch_size: int = field(default=64, metadata=between(ge=1))
    threads: int = field(default=1, metadata=_THREADS)  # fixed thread count for latency
    latency_warmup: int = field(default=20, metadata=between(ge=0))
    latency_repeats: int = field(default=100, metadata=between(ge=1))
    # batch sizes every non-reference artifact is timed at; batch 1 is the one latency gates read
    latency_batches: list[int] = field(default_factory=lambda: [1])
    # OpenVINO's benchmark_app times every IR at the same batches and threads beside the factory's harness for this
    # many seconds each (0: not run); the two medians are recorded with their relative difference
    benchmark_app_seconds: float = field(default=3.0, metadata=between(ge=0, le=600))
    # Bootstrap over subjects for every interval and paired comparison (fewer than 100 replicates give jumpy bounds).
    bootstrap_replicates: int = field(default=1000, metadata=between(ge=100, le=100_000))
    confidence: float = field(default=0.95, metadata=between(gt=0.5, lt=1.0))  # level of every interval
    bootstrap_seed: int = field(default=0, metadata=_SEED)  # fixed, so two runs on one benchmark pair up

    def check(self, fail: Callable[[str, str], None]) -> None:
        """Batch sizes that can be timed, batch 1 among them (the latency gates read it)."""
        batches = self.latency_batches
        if 1 not in batches or min(batches) < 1 or len(set(batches)) != len(batches):
            fail("latency_batches", f"got {batches} (expected distinct batch sizes >= 1, including 1)")


GateMode = Literal["point", "confidence"]


@dataclass
class GateSpec:
    """A gate written as a mapping, ``{limit: 0.05, mode: confidence, unresolvable: fail}``.

    ``mode: point`` compares the point estimate with the limit (what a bare number means). ``mode: confidence`` (the
    default of this form) needs the measurement's interval inside the limit to pass and outside it to fail; an
    interval that straddles the limit is "not resolvable", and ``unresolvable`` decides: ``fail`` (the default, so a
    gate never passes on noise) or ``pass``.
    """

    limit: float = field(metadata=_FRACTION)
    mode: GateMode = "confidence"
    # confidence mode only (null: fail); a point gate always decides, so it has nothing to resolve
    unresolvable: Literal["pass", "fail"] | None = None

    def check(self, fail: Callable[[str, str], None]) -> None:
        """``unresolvable`` would be ignored by a point gate: an error, not a silent no-op."""
        if self.mode == "point" and self.unresolvable is not None:
            fail("unresolvable", "only applies with mode 'confidence' (a point gate always decides; remove it)")

    @staticmethod
    def of(setting: float | GateSpec) -> GateSpec:
        """A gate as the recipe gives it, as a spec: a bare number is a point gate with that limit."""
        return setting if isinstance(setting, GateSpec) else GateSpec(limit=float(setting), mode="point")


@dataclass
class LatencyGateSpec(GateSpec):
    """:class:`GateSpec` with a limit in milliseconds instead of a fraction."""

    limit: float = field(metadata=between(gt=0))


# What a goal measures (factory.release.gates.METRICS defines each: its direction, unit and interval).
GoalMetric = Literal[
    "accuracy",  # mean of the per-group accuracies (10-fold protocol per group)
    "group_accuracy",  # the worst group's accuracy; its degradation is the largest drop of any one group
    "tar_at_far",  # TAR at the global threshold for `at_fmr` over the whole benchmark
    "std",  # sample std of the per-group accuracies
    "ser",  # skewed error ratio: (1 - worst accuracy) / (1 - best accuracy)
    "fmr_max",  # the highest group FMR at the global threshold set for `at_fmr`
    "fnmr_max",  # the highest group FNMR there
    "fmr_max_geomean",  # max/geomean of the group FMRs there (NIST FRVT Part 8)
    "fnmr_max_geomean",  # the same for FNMRs
    "cosine",  # mean embedding cosine to the parent on held-out faces (compress stage)
    "cosine_p1",  # 1st percentile of that cosine
    "group_cosine",  # the lowest group's mean cosine to the parent (per-group drift)
    "latency_ms",  # batch-1 median latency, on the build machine or on `target`
    "size_mb",  # the artifact's files, MB
]
Goal = Literal["threshold", "max_degradation", "percent_max_degradation"]
RATIO_METRICS = ("ser", "fmr_max_geomean", "fnmr_max_geomean")  # 1 when every group is equal
TARGET_METRICS = ("accuracy", "group_accuracy", "latency_ms")  # what a target's report measures


@dataclass
class GoalSpec:
    """One goal-based gate, in the vocabulary of Microsoft Olive: a metric, the artifacts it is read on and one goal.

    Exactly one of ``threshold`` (the value itself), ``max_degradation`` (how much worse than the artifact it is
    compared with, in the metric's unit) or ``percent_max_degradation`` (the same in percent of that artifact's
    value) is set. Which way is worse comes from the metric (accuracy down, latency up).
    """

    metric: GoalMetric
    # shipped (every released file), all (the torch student too), int8 / fp16 / fp32 (by precision), or one
    # artifact's name
    artifacts: str = field(default="shipped", metadata=matching(r"[A-Za-z0-9_.-]+", "an artifact selector"))
    # a deploy target's name (from deploy.targets): the metric as that target measured it (latency_ms, accuracy,
    # group_accuracy); null: the build machine's validate stage
    target: str | None = None
    # the operating point of tar_at_far, fmr_* and fnmr_*: 1e-3 or 1e-4 (what the validate stage measures)
    at_fmr: float = field(default=1e-3, metadata=between(gt=0, lt=1))
    threshold: float | None = None
    max_degradation: float | None = field(default=None, metadata=between(ge=0))
    percent_max_degradation: float | None = field(default=None, metadata=between(ge=0, le=100))
    # what a degradation is measured against: parent (the artifact each one derives from: INT8 vs its FP32) or an
    # artifact's name (teacher: the student against its teacher)
    against: str = field(default="parent", metadata=matching(r"[A-Za-z0-9_.-]+", "parent or an artifact's name"))
    # null: confidence where the metric is measured with an interval, point where it is not (cosine, size)
    mode: GateMode | None = None
    unresolvable: Literal["pass", "fail"] | None = None  # confidence mode only (null: fail)

    @property
    def goal(self) -> Goal:
        """Which goal is set (``check`` has made sure it is exactly one)."""
        return next(g for g in typing.get_args(Goal) if getattr(self, g) is not None)

    @property
    def limit(self) -> float:
        """The set goal's value."""
        return float(getattr(self, self.goal))

    def check(self, fail: Callable[[str, str], None]) -> None:
        """Exactly one goal; an operating point the validate stage measures; unresolvable only with confidence."""
        goals = [g for g in typing.get_args(Goal) if getattr(self, g) is not None]
        if len(goals) != 1:
            fail(
                "",
                f"sets {' and '.join(goals) or 'no goal'} (expected exactly one of {', '.join(typing.get_args(Goal))})",
            )
        if self.at_fmr not in (1e-3, 1e-4):
            fail("at_fmr", f"got {self.at_fmr!r} (expected 1e-3 or 1e-4: the operating points the validate stage sets)")
        if self.mode == "point" and self.unresolvable is not None:
            fail("unresolvable", "only applies with mode 'confidence' (a point gate always decides; remove it)")
        if self.against != "parent" and self.threshold is not None:
            fail("against", "only applies to max_degradation and percent_max_degradation (remove it)")
        if self.target is not None and self.metric not in TARGET_METRICS:
            fail(
                "target",
                f"metric {self.metric!r} is not measured on targets (expected one of {', '.join(TARGET_METRICS)})",
            )
        if self.threshold is not None:
            if self.metric in RATIO_METRICS and self.threshold < 1:
                fail(
                    "threshold", f"got {self.threshold!r} (expected a number >= 1: {self.metric} is a ratio, 1 = equal)"
                )
            elif self.metric in ("latency_ms", "size_mb") and self.threshold <= 0:
                fail("threshold", f"got {self.threshold!r} (expected a number > 0)")
            elif self.metric not in RATIO_METRICS + ("latency_ms", "size_mb") and not 0 <= self.threshold <= 1:
                fail("threshold", f"got {self.threshold!r} (expected a fraction in [0, 1]: 0.9 = 90 %)")


@dataclass
class GatesConfig:
    """Release gates; ``null`` leaves a gate out. Accuracies are fractions (0.9 = 90 %).

    The named gates below are shorthands for the most used goals. Each is a bare number, its limit checked against
    the point estimate (``mode: point``), or a :class:`GateSpec` mapping that can check the measurement's confidence
    interval instead. ``goals`` adds any other: a metric, the artifacts (or a target) it is read on, and a threshold
    or a maximum degradation from the artifact each derives from.
    """

    # mean of the per-group accuracies, every artifact
    min_accuracy: float | GateSpec | None = field(default=0.8, metadata=_FRACTION)
    # sample std of the per-group accuracies, every artifact
    max_std: float | GateSpec | None = field(default=0.05, metadata=_FRACTION)
    # every INT8 artifact's mean accuracy below the FP32 artifact it was quantized from (its `derived_from`)
    max_int8_drop: float | GateSpec | None = field(default=0.01, metadata=_FRACTION)
    # the largest drop of any one group's accuracy, INT8 vs its parent (paired per group; confidence mode: every
    # group shown within the limit to pass, any group shown beyond it to fail)
    max_int8_group_drop: float | GateSpec | None = field(default=None, metadata=_FRACTION)
    # embedding cosine of every INT8 artifact to its parent on held-out faces of every group (compress stage):
    # mean and 1st percentile; point gates (the cosine is measured on every face, not sampled from a population)
    min_int8_cosine: float | GateSpec | None = field(default=None, metadata=_FRACTION)
    min_int8_p1_cosine: float | GateSpec | None = field(default=None, metadata=_FRACTION)
    # batch-1 median, every exported artifact
    max_latency_ms: float | LatencyGateSpec | None = field(default=50.0, metadata=between(gt=0))
    # more gates, each a goal: {metric: fmr_max, at_fmr: 1e-3, threshold: 0.002} or {metric: latency_ms,
    # target: local-cpu-openvino, artifacts: int8, threshold: 5} or {metric: accuracy, artifacts: torch_fp32,
    # against: teacher, max_degradation: 0.05}
    goals: list[GoalSpec] = field(default_factory=list)


@dataclass
class DeployConfig:
    """The targets the release is measured on before it is made (:mod:`factory.recipe.targets`)."""

    # target names (files in deploy/targets/) or paths to target YAML files; each runs the release's bundle there
    targets: list[str] = field(default_factory=list)


@dataclass
class LicenceSpec:
    """The licence of one input the user supplied, as the user declares it (the factory cannot read it off a file)."""

    licence: str = field(metadata=matching(r"\S.*", "the licence's name or SPDX id, e.g. MIT or CC-BY-NC-4.0"))
    commercial: bool  # whether its terms allow commercial use
    url: str = ""  # where the terms are


@dataclass
class ReleaseConfig:
    """The release bundle: a versioned directory and its tarball (:mod:`factory.release.stage`)."""

    # part of the bundle's directory name, <name>-<version>
    version: str = field(default="0.1.0", metadata=matching(r"[A-Za-z0-9][A-Za-z0-9._+-]*", "a version like 1.2.0"))
    description: str = ""
    # the released model's own licence, as the model card's front matter states it ("other" when it is not one of
    # Hugging Face's identifiers)
    licence: str = "other"
    # what the model is for, in the model card; empty: the card's default (1:1 verification on the targets below)
    intended_use: str = ""
    # the model is meant for commercial use: every input the user supplied must have a licence that allows it
    # (declared below); an input declared non-commercial, or not declared at all, is refused by `factory check`
    commercial_use: bool = False
    # the licence of each input the user supplied, by its recipe key (teacher.checkpoint, data.benchmark,
    # data.sources.0.path, ...); a key also covers the inputs under it (teacher.checkpoints)
    licences: dict[str, LicenceSpec] = field(default_factory=dict)
    # an ed25519 private key (PEM, PKCS#8, unencrypted) the manifest is signed with (manifest.sig); `factory release
    # verify DIR --public-key K` checks it. null: not signed
    signing_key: str | None = field(default=None, metadata={"path": True, "licensed": False})


@dataclass
class Recipe:
    """One build, from data to release."""

    # defaults to the recipe file's stem
    name: str = field(default="", metadata=matching(f"|{RUN_NAME}", RUN_NAME_EXPECTED))
    seed: int = field(default=0, metadata=_SEED)
    threads: int = field(default=2, metadata=_THREADS)  # torch/NNCF threads for training and evaluation
    run_dir: str | None = None  # default runs/<name>
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the resolved recipe (what is hashed and saved)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The resolved recipe as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
