"""The recipe schema: one dataclass per section, with field metadata that the loader checks.

Field metadata understood by :mod:`factory.recipe.loader`:

- ``{"path": True}``: a file path that must exist, resolved relative to the file that set it.
- ``{"registry": FAMILY}``: a name that must be registered in that family (``"model"``, ``"head"``).
- ``{"union": FAMILY}`` on a field annotated ``Any`` (or ``list[Any]``): a tagged union, a mapping whose ``kind``
  names a config dataclass registered in that family.

Families are declared in :data:`factory.recipe.loader.UNION_FAMILIES`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml


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
    # Labelled training data: procedural identities, or {kind: files, path: ...} (a RecordIO pack, a labelled
    # folder or a list). Kinds: factory.data.sources.SOURCES.
    source: Any = field(default=None, metadata={"union": "source", "default": {"kind": "procedural"}})
    identities_per_group: int = 100  # procedural source
    head: str = field(default="cosface", metadata={"registry": "head"})
    margin: float = 0.35
    scale: float = 32.0
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class DistillConfig:
    """Label-free feature distillation of the student on online procedural faces."""

    student: str = field(default="tinyfar_a", metadata={"registry": "model"})
    # What to distill on: online procedural faces, {kind: files, path: ...} (a flat folder, a list or a RecordIO
    # pack), {kind: stylegan, ...} or {kind: mix, sources: [...], weights: [...]}. Kinds: factory.data.sources.
    source: Any = field(default=None, metadata={"union": "source", "default": {"kind": "procedural"}})
    loss: str = field(default="mse", metadata={"registry": "kd_loss"})
    normalize: bool = False  # SynthDistill uses raw embeddings; QuantFace/MST-KD normalise first
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="cosine")
    )


@dataclass
class ExportConfig:
    """Artifacts produced from the distilled student, each checked against torch."""

    # In order; each may convert an earlier one. Kinds: factory.export.exporters.EXPORTERS.
    formats: list[Any] = field(
        default=None, metadata={"union": "exporter", "default": [{"kind": "onnx", "opset": 18}, {"kind": "openvino"}]}
    )
    min_parity_cosine: float = 0.999  # every exported artifact vs torch, on fixed inputs


@dataclass
class CompressConfig:
    """Compression of exported artifacts: NNCF post-training INT8 quantization of the OpenVINO FP32 IR today."""

    # Each derives an artifact from one the build has. Kinds: factory.compress.compressors.COMPRESSORS.
    methods: list[Any] = field(default=None, metadata={"union": "compressor", "default": [{"kind": "openvino_ptq"}]})


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
