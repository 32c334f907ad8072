"""Training data sources, registered by ``kind``: where the batches of a training stage come from.

A recipe names a source as a tagged section, e.g. ``distill.source: {kind: stylegan, pickle: G.pkl, ...}``. The
registered object is that section's config dataclass; ``open(ctx)`` turns it into a live source for one training run
(:class:`~factory.train.task.Source`: ``batch(step)``, a ``feedback`` hook, resumable state). Every batch is a pure
function of ``(seed, split, step)`` and the source's state, so training resumes exactly.

Kinds: ``procedural`` (the built-in world, labelled identities or fresh ones every step, optionally with more of the
groups the student matches the teacher worst on: :class:`GroupBalancer`), ``procedural_set`` (a fixed, finite set of
labelled procedural faces rendered once: the stand-in for a real dataset), ``files`` (a RecordIO pack, a labelled
folder or list for teachers; a flat folder, list or pack for distillation), ``stylegan`` (a user's StyleGAN2-ADA
generator, distillation only), ``mix`` (several sources, each filling its share of every batch) and
``real_synthetic`` (real and synthetic faces at one ratio inside every group: :mod:`factory.data.real_synthetic`).

Batches of a static set (files, ``procedural_set``, a real/synthetic mix's real part and its fixed synthetic part)
key every sample by image and flip (``keys``, :mod:`factory.data.static`), so the teacher's embedding of a repeated
image is computed once.

Files are decoded in the training process: the data benchmark measured decoding at thousands of images/s on two
cores, far above what a student trains at, so workers would add complexity for nothing here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from factory.data.formats.folders import LabelledImages, read_image_folder, read_image_list
from factory.data.formats.recordio import RecordIOReader
from factory.data.group_balance import GroupBalancer
from factory.data.mixing import LabelledImageDataset, RecordIODataset, read_flat_folder
from factory.data.real_synthetic import PlannedGroups, RealSyntheticBatches, fixed_set_context
from factory.data.resampling import DynamicResampling
from factory.data.source_context import SourceContext
from factory.data.static import (
    FileImages,
    RenderedSet,
    ShardImages,
    draw_by_group,
    keyed_batch,
    members_by_group,
)
from factory.data.world.seeding import make_generator, stable_seed
from factory.data.world.splits import group_counts, identity_set, labelled_batch, unlabelled_batch
from factory.recipe.schema import between
from factory.registry import Registry

Fail = Callable[[str, str], None]  # (relative key, message): how a section reports a problem at its recipe line


class Source(Protocol):
    """Batches as a function of the step, with a feedback hook and resumable state (what training pulls from).

    A source may also have ``report() -> dict``: what it tells the stage's metrics about the run (a real/synthetic
    mix's composition).
    """

    def batch(self, step: int) -> dict[str, Any]:
        """The batch for ``step``: at least ``"pixels"`` (uint8 ``N×3×H×W``)."""
        ...

    def feedback(self, step: int, batch: dict[str, Any], per_sample: dict[str, torch.Tensor]) -> None:
        """What the task measured on each sample of ``batch`` (e.g. ``agreement``), for sources that adapt to it."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything of the source that must survive a resume."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        ...


class StatelessSource:
    """Defaults for a source whose batches depend on the step only."""

    def feedback(self, step: int, batch: dict[str, Any], per_sample: dict[str, torch.Tensor]) -> None:
        """Nothing adapts."""
        del step, batch, per_sample

    def state_dict(self) -> dict[str, Any]:
        """No state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """No state to restore."""
        if state:
            raise ValueError(f"a stateless source got resume state {sorted(state)}")


SOURCES: Registry[type] = Registry("source")


@SOURCES.register("procedural")
@dataclass
class ProceduralSourceConfig:
    """The built-in procedural world: a fixed identity set when labelled, fresh identities every step otherwise."""

    kind: str = "procedural"
    # dynamic: SynthDistill's re-sampling (factory.data.resampling), every second step re-renders the previous
    # step's identities moved by resample_scale·s·ε, s the student-teacher agreement. static: fresh every step.
    sampling: Literal["static", "dynamic"] = "static"
    resample_scale: float = field(default=1.0, metadata=between(gt=0))  # the paper's c
    # equal: every group gets the same share of each fresh batch. adaptive: groups the student agrees with the
    # teacher least on get more of it (GroupBalancer), adaptive_strength saying how strongly.
    group_balance: Literal["equal", "adaptive"] = "equal"
    adaptive_strength: float = field(default=1.0, metadata=between(gt=0))

    def open(self, ctx: SourceContext) -> Any:
        """A live source over the recipe's world."""
        if ctx.labelled:
            if self.sampling == "dynamic":
                raise ValueError("sampling: dynamic re-samples latents for distillation; a labelled source is static")
            if self.group_balance == "adaptive":
                raise ValueError(
                    "group_balance: adaptive follows the student-teacher agreement of label-free distillation; a "
                    "labelled source draws its fixed identities uniformly"
                )
            return LabelledWorldBatches(ctx)
        balancer = None
        if self.group_balance == "adaptive":
            balancer = GroupBalancer(len(ctx.world.group_names), self.adaptive_strength)
        return _sampled(WorldFaces(ctx, balancer), self.sampling, self.resample_scale, ctx)

    def open_by_group(self, ctx: SourceContext) -> tuple[Any, PlannedGroups]:
        """A live source whose fresh batches have the group counts a real/synthetic mix plans for each step.

        Returns:
            The source, and the :class:`~factory.data.real_synthetic.PlannedGroups` the mix sets the counts in
            (holding this section's adaptive balance, if any).
        """
        balancer = None
        if self.group_balance == "adaptive":
            balancer = GroupBalancer(len(ctx.world.group_names), self.adaptive_strength)
        planned = PlannedGroups(len(ctx.world.group_names), balancer)
        return _sampled(WorldFaces(ctx, planned), self.sampling, self.resample_scale, ctx), planned

    def describe(self, ctx: SourceContext) -> str:
        """Where the data comes from, for metrics and reports."""
        balance = f" (adaptive group balance, strength {self.adaptive_strength:g})"
        return (
            f"procedural:{ctx.split}"
            + _sampling_note(self.sampling, self.resample_scale)
            + (balance if self.group_balance == "adaptive" else "")
        )


@SOURCES.register("files")
@dataclass
class FilesSourceConfig:
    """Images from files: a RecordIO pack, a labelled folder (BUPT or ImageFolder) or a CSV/TSV list.

    For distillation also a flat folder (labels are ignored).
    """

    kind: str = "files"
    path: str | None = field(default=None, metadata={"path": True})
    # For either part of a real/synthetic mix, whose groups must be the world's. Files without group folders or a
    # group column: identity,group lines (a RecordIO pack's identities are its labels). Files with groups of their
    # own: <their group>,<world group> lines renaming them (BUPT's African,alpha ...).
    group_mapping: str | None = field(default=None, metadata={"path": True, "licensed": False})

    def check(self, fail: Fail) -> None:
        """A files source names its files."""
        if self.path is None:
            fail("path", "missing (expected the path of a RecordIO pack, an image folder or a list)")

    def open(self, ctx: SourceContext) -> Any:
        """A live source over the files (one teacher's share of their identities, by group, with ``ctx.shard``)."""
        if ctx.shard is not None:
            return FileBatches(self.path, ctx, self.group_mapping)
        if self.group_mapping is not None:
            raise ValueError(
                f"group_mapping {self.group_mapping} gives the files the world's groups, for a real_synthetic "
                "source's part or the teachers of teacher.specialists; a files source on its own does not use "
                "groups (remove it)"
            )
        return FileBatches(self.path, ctx)

    def grouped(self, ctx: SourceContext) -> FileImages:
        """The files as a static set with the world's groups (refused, with the path, where a group is missing)."""
        return FileImages(self.path, ctx.world.group_names, size=ctx.size, group_mapping=self.group_mapping)

    def describe(self, ctx: SourceContext) -> str:
        """The path (and the group mapping)."""
        return str(self.path) + (f" (groups from {self.group_mapping})" if self.group_mapping else "")


@SOURCES.register("procedural_set")
@dataclass
class ProceduralSetSourceConfig:
    """A fixed, finite set of labelled procedural faces, rendered once: a static dataset standing in for real faces.

    ``identities_per_group`` identities of every group, of the split ``<stage split>-set`` (their own: never the
    teacher's, the benchmark's or the online faces'), each with ``images_per_identity`` images; every epoch draws the
    same images (flipped with p ½), so the teacher's embedding of each is computed once.
    """

    kind: str = "procedural_set"
    identities_per_group: int = field(default=50, metadata=between(ge=1))
    images_per_identity: int = field(default=8, metadata=between(ge=1))

    def grouped(self, ctx: SourceContext) -> RenderedSet:
        """The set (rendered lazily, an identity at a time)."""
        return RenderedSet(
            ctx.world, f"{ctx.split}-set", self.identities_per_group, self.images_per_identity, seed=ctx.seed
        )

    def open(self, ctx: SourceContext) -> Any:
        """Group-balanced batches of the set, labelled (identity index) when the stage needs labels."""
        return SetBatches(self.grouped(ctx), ctx)

    def describe(self, ctx: SourceContext) -> str:
        """The split and the set's size."""
        return (
            f"procedural_set:{ctx.split}-set ({self.identities_per_group} identities per group x "
            f"{self.images_per_identity} images)"
        )


@SOURCES.register("stylegan")
@dataclass
class StyleGANSourceConfig:
    """A user's NVlabs StyleGAN2-ADA generator (label-free distillation only): :mod:`factory.data.world.stylegan`."""

    kind: str = "stylegan"
    pickle: str | None = field(default=None, metadata={"path": True})  # network-snapshot .pkl
    code_dir: str | None = field(default=None, metadata={"path": True})  # the user's stylegan2-ada-pytorch clone
    trust_pickle: bool = False  # the pickle runs code when loaded: the user must say they trust it
    # 1 samples the whole latent distribution, smaller pulls towards the average face (0 renders that one face for
    # every latent: nothing to distill on); above 1 extrapolates away from it, into artefacts.
    truncation_psi: float = field(default=1.0, metadata=between(gt=0, le=1))
    sampling: Literal["static", "dynamic"] = "static"  # as the procedural source's (factory.data.resampling)
    resample_scale: float = field(default=1.0, metadata=between(gt=0))

    def check(self, fail: Fail) -> None:
        """Both files are needed, and loading must be explicitly trusted."""
        for key in ("pickle", "code_dir"):
            if getattr(self, key) is None:
                fail(key, "missing (expected the generator pickle and the NVlabs code folder)")
        if not self.trust_pickle:
            fail("trust_pickle", "a generator pickle runs code when loaded: set true once you trust its origin")

    def open(self, ctx: SourceContext) -> Any:
        """Load the generator (trusted) and wrap it as a live source."""
        from factory.data.world.stylegan import StyleGANSource, load_stylegan2

        if ctx.labelled:
            raise ValueError("a stylegan source has no identity labels: use it for distillation (distill.source)")
        generator = load_stylegan2(self.pickle, self.code_dir, trust=self.trust_pickle)
        faces = GeneratorFaces(StyleGANSource(generator, truncation_psi=self.truncation_psi), ctx)
        return _sampled(faces, self.sampling, self.resample_scale, ctx)

    def describe(self, ctx: SourceContext) -> str:
        """The generator pickle."""
        return f"stylegan:{self.pickle}" + _sampling_note(self.sampling, self.resample_scale)


@SOURCES.register("mix")
@dataclass
class MixSourceConfig:
    """Several sources, each filling a fixed share of every batch (``weights``, normalised)."""

    kind: str = "mix"
    sources: list[Any] = field(default_factory=list, metadata={"union": "source"})
    weights: list[float] = field(default_factory=list, metadata=between(ge=0))  # 0 leaves a source out

    def check(self, fail: Fail) -> None:
        """One weight per source, and some weight to share the batch by (each weight's range is the schema's)."""
        if not self.sources:
            fail("sources", "empty (expected a list of sources)")
        if len(self.weights) != len(self.sources):
            fail("weights", f"{len(self.weights)} weights for {len(self.sources)} sources (expected one per source)")
        elif self.weights and all(w >= 0 for w in self.weights) and sum(self.weights) <= 0:
            fail("weights", "all 0 (expected at least one weight > 0: the shares of the batch are weight / sum)")

    def open(self, ctx: SourceContext) -> Any:
        """Open every part with its share of the batch."""
        if ctx.labelled:
            raise ValueError("a mix has no single label space: teachers train on one labelled source")
        return MixedBatches(self, ctx)

    def describe(self, ctx: SourceContext) -> str:
        """Each part with its weight."""
        return " + ".join(f"{w:g}×{s.describe(ctx)}" for s, w in zip(self.sources, self.weights, strict=True))


def _kinds_with(capability: str) -> str:
    return ", ".join(n for n in SOURCES.names() if hasattr(SOURCES.get(n), capability))


@SOURCES.register("real_synthetic")
@dataclass
class RealSyntheticSourceConfig:
    """Real and synthetic faces at one ratio inside every group (seed 000; the paper's best mix: 70 % real).

    ``real``: images with groups (``files`` with group folders, a group column or ``group_mapping``, or the
    ``procedural_set`` stand-in). ``synthetic``: faces rendered in the groups asked for (``procedural``, static or
    dynamic, equal or adaptive group balance), or a fixed synthetic set with groups of the same kinds as ``real``
    (the paper's DCFace or IDiff-Face images with an ethnicity ``group_mapping``), drawn per group as the real one,
    keyed apart from it and with no feedback. Every group's part of each batch is ``real_share`` real, the rest
    synthetic (:mod:`factory.data.real_synthetic`); ``real_share: 1`` trains on the real images alone, group-balanced.
    """

    kind: str = "real_synthetic"
    real: Any = field(default=None, metadata={"union": "source"})
    synthetic: Any = field(default=None, metadata={"union": "source", "default": {"kind": "procedural"}})
    real_share: float = field(
        default=0.7,
        metadata=between(gt=0, le=1, note="1 is real images only; for synthetic only, use the synthetic source"),
    )

    def check(self, fail: Fail) -> None:
        """The real part must be a fixed set with groups; the synthetic part rendered in given groups, or one too."""
        if self.real is None:
            fail("real", f"missing (expected real images with groups, a source of kind: {_kinds_with('grouped')})")
        elif not hasattr(self.real, "grouped"):
            fail(
                "real.kind",
                f"got {self.real.kind!r}, which is no fixed set of images with groups (expected one of: "
                f"{_kinds_with('grouped')})",
            )
        if self.synthetic is not None and not (
            hasattr(self.synthetic, "open_by_group") or hasattr(self.synthetic, "grouped")
        ):
            fail(
                "synthetic.kind",
                f"got {self.synthetic.kind!r}, whose faces can neither be rendered in the groups a batch needs nor "
                f"drawn from a fixed set with groups (expected one of: {_kinds_with('open_by_group')}, rendered per "
                f"group; {_kinds_with('grouped')}, a fixed set with groups; kind mix shares the batch by one global "
                "ratio instead)",
            )

    def open(self, ctx: SourceContext) -> Any:
        """The group-planned mix of both parts."""
        if ctx.labelled:
            raise ValueError("a real/synthetic mix has no single label space: teachers train on one labelled source")
        return RealSyntheticBatches(self, ctx)

    def describe(self, ctx: SourceContext) -> str:
        """The ratio per group, and both parts."""
        real = f"real {self.real.describe(ctx)}"
        if self.real_share == 1:
            return f"real_synthetic 100/0 per group (real only): {real}"
        ratio = f"{self.real_share * 100:g}/{(1 - self.real_share) * 100:.3g}"
        rendered = hasattr(self.synthetic, "open_by_group")
        synthetic = self.synthetic.describe(ctx if rendered else fixed_set_context(ctx))
        return f"real_synthetic {ratio} per group: {real} + synthetic {synthetic}"


class LabelledWorldBatches(StatelessSource):
    """Labelled procedural faces of a fixed identity set (teacher training)."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.ids = identity_set(ctx.world, ctx.split, per_group=ctx.identities_per_group, seed=ctx.seed)
        self.stream = ctx.seed
        if ctx.shard is not None:
            # The shard is cut from the split's identities (drawn with the recipe's seed, the same for every
            # teacher); its batches come from a stream of its own, so no two teachers see the same draws.
            self.ids = ctx.shard.select(self.ids)
            self.stream = stable_seed(ctx.seed, "shard", ctx.shard.name)
        self.num_classes = len(self.ids.keys)

    def batch(self, step: int) -> dict[str, Any]:
        """Images, identity labels and groups of one step."""
        pixels, labels, groups = labelled_batch(self.ctx.world, self.ids, self.ctx.batch_size, step, self.stream)
        return {"pixels": pixels, "labels": labels, "groups": groups}


class WorldFaces:
    """Fresh procedural identities every step, balanced over groups, with their latents (label-free distillation).

    With a ``balancer`` each fresh batch's group counts follow its shares (exactly, when they are counts: a
    real/synthetic mix's :class:`~factory.data.real_synthetic.PlannedGroups`); without one every group gets an equal
    share.
    """

    def __init__(self, ctx: SourceContext, balancer: GroupBalancer | PlannedGroups | None = None) -> None:
        self.ctx, self.balancer = ctx, balancer

    def fresh(self, step: int) -> dict[str, Any]:
        """Images, latents and groups of one step."""
        shares = None if self.balancer is None else self.balancer.shares()
        batch = unlabelled_batch(
            self.ctx.world, self.ctx.batch_size, step, self.ctx.seed, split=self.ctx.split, shares=shares
        )
        return {"pixels": batch["images"], "w": batch["w"], "groups": batch["group"]}

    def render(self, w: torch.Tensor, groups: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """Faces of given latents, nuisances from ``generator``."""
        del groups  # w carries everything the renderer needs
        return self.ctx.world.synthesis(w, generator)

    def spread(self, groups: torch.Tensor | None) -> torch.Tensor:
        """Each sample's group spread in w: the scale of a re-sampling move that keeps it in its group."""
        return self.ctx.world.w_spread(groups)


class GeneratorFaces:
    """Faces from a generator with the world's interface (``sample_z``, ``mapping``, ``synthesis``, ``w_spread``)."""

    def __init__(self, generator: Any, ctx: SourceContext) -> None:
        if generator.resolution != ctx.size:
            raise ValueError(f"the generator gives {generator.resolution}px faces, the model takes {ctx.size}px")
        self.generator, self.ctx = generator, ctx

    def fresh(self, step: int) -> dict[str, Any]:
        """Images rendered from fresh latents, with the latents."""
        gen = make_generator("generator", self.ctx.seed, self.ctx.split, step)
        z = self.generator.sample_z(self.ctx.batch_size, gen)
        w = self.generator.mapping(z)
        return {"pixels": self.generator.synthesis(w, gen), "w": w}

    def render(self, w: torch.Tensor, groups: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """Faces of given latents."""
        del groups
        return self.generator.synthesis(w, generator)

    def spread(self, groups: torch.Tensor | None) -> torch.Tensor | float:
        """The generator's scale of a move in W."""
        return self.generator.w_spread(groups)


class StaticBatches(StatelessSource):
    """Fresh latents every step: the faces' static batches.

    Nothing is fed back unless the faces are group-balanced adaptively: then the feedback and the state are the
    balancer's (without one the source is stateless, its state ``{}``).
    """

    def __init__(self, faces: Any, balancer: GroupBalancer | None = None) -> None:
        self.faces, self.balancer = faces, balancer

    def batch(self, step: int) -> dict[str, Any]:
        """The static batch of ``step``."""
        return self.faces.fresh(step)

    def feedback(self, step: int, batch: dict[str, Any], per_sample: dict[str, torch.Tensor]) -> None:
        """The balancer's running agreement learns from this batch."""
        if self.balancer is not None:
            self.balancer.feedback(batch, per_sample)

    def state_dict(self) -> dict[str, Any]:
        """The balancer's state, or none."""
        return {} if self.balancer is None else {"balance": self.balancer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if self.balancer is None:
            super().load_state_dict(state)
        elif set(state) != {"balance"}:
            raise ValueError(f"group-balanced source state holds {sorted(state)}, expected ['balance']")
        else:
            self.balancer.load_state_dict(state["balance"])


def _sampled(faces: Any, sampling: str, scale: float, ctx: SourceContext) -> Any:
    balancer = getattr(faces, "balancer", None)  # the same object draws the counts and learns from the feedback
    if sampling == "dynamic":
        return DynamicResampling(faces, scale, ctx.seed, ctx.split, balancer=balancer)
    return StaticBatches(faces, balancer)


def _sampling_note(sampling: str, scale: float) -> str:
    return f" (dynamic re-sampling, c = {scale:g})" if sampling == "dynamic" else ""


class FileBatches(StatelessSource):
    """Deterministic random batches of files, labelled (teacher) or not (distillation)."""

    def __init__(
        self, path: str | os.PathLike[str], ctx: SourceContext, group_mapping: str | os.PathLike[str] | None = None
    ) -> None:
        self.ctx, self.stream = ctx, ctx.seed
        if ctx.shard is not None:
            # One of several teachers: its share of the identities, by group, so the files must have groups. Its
            # batches come from a stream of its own, as a procedural shard's do.
            try:
                images = FileImages(path, ctx.world.group_names, ctx.size, group_mapping=group_mapping, flip=True)
            except ValueError as e:
                raise ValueError(
                    f"teacher {ctx.shard.name!r} trains on its share of the identities, dealt by group, and {e}"
                ) from e
            self.dataset = ShardImages(images, ctx.shard)
            self.ids = self.dataset.ids
            self.num_classes = len(self.ids)
            self.stream = stable_seed(ctx.seed, "shard", ctx.shard.name)
        elif ctx.labelled:
            self.dataset: torch.utils.data.Dataset = open_labelled(path, size=ctx.size)
            self.num_classes = identity_count(self.dataset)
        else:
            self.dataset = UnlabelledImages(path, size=ctx.size)

    def batch(self, step: int) -> dict[str, Any]:
        """Images (and labels) of one step; unlabelled ones keyed by image and flip (static data)."""
        if not self.ctx.labelled:
            gen = make_generator("files", self.ctx.seed, step)
            indices = torch.randint(0, len(self.dataset), (self.ctx.batch_size,), generator=gen)
            return keyed_batch(self.dataset, indices, torch.rand(len(indices), generator=gen) < 0.5)
        items = file_batch(self.dataset, self.ctx.batch_size, step, self.stream)
        return {"pixels": torch.stack([i[0] for i in items]), "labels": torch.tensor([i[1] for i in items])}


class SetBatches(StatelessSource):
    """Batches of a procedural set, group-balanced, labelled (identity index) when the stage needs labels.

    Every group gets an equal part (round-robin from a random first group), its images uniform within the group.
    """

    def __init__(self, images: RenderedSet, ctx: SourceContext) -> None:
        self.images, self.ctx = images, ctx
        self.members = members_by_group(images, ctx.world.group_names)
        if ctx.labelled:
            self.num_classes = images.identities

    def batch(self, step: int) -> dict[str, Any]:
        """Images, keys, groups (and labels) of one step."""
        gen = make_generator("procedural-set", self.ctx.seed, self.ctx.split, step)
        groups = len(self.members)
        first = int(torch.randint(0, groups, (1,), generator=gen))
        counts = group_counts(torch.ones(groups), self.ctx.batch_size, first=first)
        batch, indices = draw_by_group(self.images, self.members, counts, gen)
        if self.ctx.labelled:
            batch["labels"] = self.images.labels[indices]
        return batch


class MixedBatches:
    """Each part fills its share of the batch; feedback is routed back to the part a sample came from."""

    def __init__(self, cfg: MixSourceConfig, ctx: SourceContext) -> None:
        self.sizes = _shares(ctx.batch_size, cfg.weights)
        self.parts = [
            source.open(dataclasses.replace(ctx, batch_size=n, split=f"{ctx.split}-mix{i}"))
            for i, (source, n) in enumerate(zip(cfg.sources, self.sizes, strict=True))
            if n > 0
        ]
        self.sizes = [n for n in self.sizes if n > 0]
        self._batches: list[dict[str, Any]] = []

    def batch(self, step: int) -> dict[str, Any]:
        """The parts' batches, concatenated in order (groups only when every part has them)."""
        batches = [part.batch(step) for part in self.parts]
        self._batches = batches  # each part's own batch (its latents too), for its feedback on this step
        out = {"pixels": torch.cat([b["pixels"] for b in batches])}
        if all("groups" in b for b in batches):
            out["groups"] = torch.cat([b["groups"] for b in batches])
        return out

    def feedback(self, step: int, batch: dict[str, Any], per_sample: dict[str, torch.Tensor]) -> None:
        """Each part gets the slice of the per-sample values that belongs to its images."""
        del batch  # the concatenation: each part gets back the batch it made
        start = 0
        for part, n, own in zip(self.parts, self.sizes, self._batches, strict=True):
            part.feedback(step, own, {k: v[start : start + n] for k, v in per_sample.items()})
            start += n

    def state_dict(self) -> dict[str, Any]:
        """Every part's state, by position."""
        return {str(i): part.state_dict() for i, part in enumerate(self.parts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every part."""
        for i, part in enumerate(self.parts):
            part.load_state_dict(state.get(str(i), {}))


def _shares(total: int, weights: list[float]) -> list[int]:
    """``total`` split by ``weights`` with the largest-remainder rule (sums to ``total`` exactly)."""
    exact = [total * w / sum(weights) for w in weights]
    sizes = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: sizes[i] - exact[i])[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes


LabelledDataset = LabelledImageDataset | RecordIODataset


def open_labelled(path: str | os.PathLike[str], size: int = 112) -> LabelledDataset:
    """``(uint8 image, identity label)`` items from a RecordIO pack, a labelled folder or a CSV/TSV list."""
    path = Path(path)
    if path.suffix in (".rec", ".idx"):
        return RecordIODataset(path.with_suffix(".rec"), size=size, flip=True)
    index = read_image_folder(path) if path.is_dir() else read_image_list(path)
    return LabelledImageDataset(index, size=size, flip=True)


def identity_count(dataset: LabelledDataset) -> int:
    """How many classes a margin head needs for ``dataset``."""
    if isinstance(dataset, RecordIODataset):
        with RecordIOReader(dataset.rec) as reader:
            labels = {reader.label(k) for k in dataset.keys}
        if labels != set(range(len(labels))):
            raise ValueError(f"{dataset.rec}: labels must be 0..N-1 for a margin head, got {len(labels)} distinct")
        return len(labels)
    return len(dataset.labels)


class UnlabelledImages(torch.utils.data.Dataset):
    """uint8 images of a flat folder, a list or a RecordIO pack (labels ignored), for label-free distillation.

    Unflipped: the batch flips (and keys) each draw.
    """

    def __init__(self, path: str | os.PathLike[str], size: int = 112) -> None:
        path = Path(path)
        if path.suffix in (".rec", ".idx"):
            self.inner: torch.utils.data.Dataset = RecordIODataset(path.with_suffix(".rec"), size=size)
        else:
            paths = read_flat_folder(path) if path.is_dir() else read_image_list(path).paths
            index = LabelledImages(paths, ["-"] * len(paths), ["all"] * len(paths), source=str(path))
            self.inner = LabelledImageDataset(index, size=size)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.inner[i][0]

    def image(self, index: int) -> torch.Tensor:
        """The image at ``index``, unflipped."""
        return self.inner[index][0]


def file_batch(dataset: torch.utils.data.Dataset, batch_size: int, step: int, seed: int) -> list:
    """Items of a deterministic random batch: the same ``(seed, step)`` always gives the same items and flips."""
    gen = make_generator("files", seed, step)
    indices = torch.randint(0, len(dataset), (batch_size,), generator=gen)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))  # the flip augmentation's draws
    return [dataset[int(i)] for i in indices]
