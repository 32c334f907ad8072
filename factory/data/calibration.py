"""INT8 calibration faces: drawn from any training source, balanced over groups, proven apart from the benchmark.

Quantization ranges are fitted on these faces, so they must be faces the model will meet, in every group (seed 004:
calibrating on a skewed set widens the gap between groups), and none of them may be a benchmark face: ranges fitted
on the benchmark would flatter every INT8 number the build reports. The data stage draws them once
(:func:`draw_calibration`) and refuses to go on unless :func:`prove_apart` shows the two sets apart:

- **identities** of the procedural world by split: calibration faces are rendered from identities of the split
  ``calibration`` (``calibration-set`` for a fixed procedural set), the benchmark's from ``benchmark``; splits never
  share an identity (:mod:`factory.data.world.splits`);
- **files** by path: no calibration file may be, lie inside, or contain the benchmark's file or folder;
- **content**: no calibration image may equal a benchmark image or its mirror image, pixel for pixel (sha256 of the
  aligned uint8 crop), whatever the source.

A real photo of a benchmark identity that is not a benchmark image cannot be caught without identity labels shared
by both sets; the record says which checks ran.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factory.data.benchmark import BENCHMARK_SPLIT
from factory.data.source_context import SourceContext
from factory.data.sources import UnlabelledImages
from factory.data.static import NO_KEY, members_by_group
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.seeding import make_generator

CALIBRATION_SPLIT = "calibration"
RECOMMENDED_IMAGES = 300  # QuantFace and NNCF's own default subset; fewer ranges clip rare faces
_MAX_DRAW_FACTOR = 50  # an online source may repeat faces; give up after this many draws per asked face
# Mean red minus mean blue (0-255) of a face set: positive for skin in RGB order; two sets of opposite sign beyond
# this are in different channel orders.
_COLOUR_MARGIN = 4.0


@dataclass
class CalibrationSet:
    """The calibration faces and what they are.

    Attributes:
        images: uint8 ``N×3×H×W`` RGB.
        groups: the world group index of each image, or -1 where the source has none.
        description: the source, as the recipe's reports name it.
    """

    images: np.ndarray
    groups: np.ndarray
    description: str

    def group_counts(self, group_names: list[str] | tuple[str, ...]) -> dict[str, int]:
        """How many images of each group (``"unknown"`` for images without one)."""
        counts = {name: int((self.groups == g).sum()) for g, name in enumerate(group_names)}
        unknown = int((self.groups < 0).sum())
        return counts | ({"unknown": unknown} if unknown else {})


def draw_calibration(cfg: Any, world: ProceduralFaceWorld, seed: int, size: int = 112) -> CalibrationSet:
    """``cfg.images`` distinct faces from ``cfg.source`` (a :class:`~factory.recipe.schema.CalibrationConfig`).

    A fixed set (files, ``procedural_set``) is drawn from without replacement; an online source (procedural,
    stylegan, mix, real_synthetic) step by step, keeping every face once. ``balance: equal`` gives every group of
    the world the same share (±1); ``source`` keeps the source's own proportions.

    Raises:
        ValueError: the source cannot give as many distinct faces as asked (in total or for a group), has no
            groups while ``balance`` is ``equal``, or re-samples from a student's feedback (``sampling: dynamic``).
    """
    source, n = cfg.source, cfg.images
    _refuse_dynamic(source)
    ctx = SourceContext(
        world=world, batch_size=min(128, n), seed=seed, split=CALIBRATION_SPLIT, labelled=False, size=size
    )
    description = source.describe(ctx)
    group_names = list(world.group_names)
    quota = _equal_quota(n, len(group_names)) if cfg.balance == "equal" else None
    if hasattr(source, "grouped"):
        images, groups = _from_fixed_set(source, ctx, n, quota, seed)
    else:
        images, groups = _from_online_source(source.open(ctx), description, n, quota)
    return CalibrationSet(images=images, groups=groups, description=description)


def _refuse_dynamic(source: Any) -> None:
    """Dynamic re-sampling moves latents by a student's agreement; calibration has no student to feed back."""
    if getattr(source, "sampling", "static") == "dynamic":
        raise ValueError(
            "data.calibration.source: sampling dynamic re-samples faces from a student's feedback, which calibration "
            "has none of (expected sampling: static)"
        )
    for part in _parts(source):
        _refuse_dynamic(part)


def _parts(source: Any) -> list[Any]:
    """The nested sources of a mix or a real/synthetic mix."""
    nested = list(getattr(source, "sources", None) or [])
    nested += [getattr(source, key) for key in ("real", "synthetic") if getattr(source, key, None) is not None]
    return nested


def _equal_quota(n: int, groups: int) -> np.ndarray:
    """``n`` split over ``groups`` as evenly as integers allow (the first ``n % groups`` get one more)."""
    quota = np.full(groups, n // groups)
    quota[: n % groups] += 1
    return quota


def _from_fixed_set(
    source: Any, ctx: SourceContext, n: int, quota: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct images of a finite set, drawn without replacement (per group when ``quota`` is given)."""
    gen = make_generator("calibration", seed)
    if quota is None and source.kind == "files":  # files without groups: a flat folder, list or pack
        images: Any = UnlabelledImages(source.path, size=ctx.size)
        chosen = _choose(len(images), n, gen, str(source.path), "")
        groups = np.full(len(chosen), -1, np.int64)
    else:
        try:
            images = source.grouped(ctx)
        except ValueError as e:
            raise ValueError(
                f"data.calibration.balance: equal takes as many faces from every group, which needs files with "
                f"groups, and {e} (or set balance: source)"
            ) from None
        if quota is None:
            chosen = _choose(len(images), n, gen, images.source, "")
        else:
            members = members_by_group(images, list(ctx.world.group_names))
            picks = [
                m[_choose(len(m), int(q), gen, images.source, f" of group {ctx.world.group_names[g]!r}")]
                for g, (m, q) in enumerate(zip(members, quota, strict=True))
            ]
            chosen = torch.cat(picks).numpy()
        groups = images.groups[torch.as_tensor(chosen)].numpy().astype(np.int64)
    pixels = np.stack([images.image(int(i)).numpy() for i in chosen])
    return pixels, groups


def _choose(available: int, wanted: int, gen: torch.Generator, where: str, what: str) -> np.ndarray:
    if available < wanted:
        raise ValueError(
            f"data.calibration.images: {wanted} asked{what}, but {where} holds only {available} image"
            f"{'s' if available != 1 else ''}{what} (expected a smaller images, or more files)"
        )
    return torch.randperm(available, generator=gen)[:wanted].numpy()


def _from_online_source(live: Any, description: str, n: int, quota: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Faces of successive steps, each distinct face once (keyed ones by image), until every share is filled."""
    wanted = np.array([n]) if quota is None else quota
    taken: list[list[np.ndarray]] = [[] for _ in wanted]
    group_of: list[list[int]] = [[] for _ in wanted]
    seen: set[int] = set()
    drawn, step = 0, 0
    while any(len(t) < w for t, w in zip(taken, wanted, strict=True)):
        if drawn >= _MAX_DRAW_FACTOR * n:
            short = [int(w - len(t)) for t, w in zip(taken, wanted, strict=True)]
            raise ValueError(
                f"data.calibration.images: {n} asked, but {drawn} faces drawn from {description} gave "
                f"{n - sum(short)} distinct ones in the shares asked (expected a source with more distinct faces)"
            )
        batch = live.batch(step)
        step += 1
        pixels = batch["pixels"]
        drawn += len(pixels)
        if quota is not None and "groups" not in batch:
            raise ValueError(
                f"data.calibration.balance: equal needs faces with groups, and {description} has none "
                "(expected balance: source, or a source with groups)"
            )
        keys = batch.get("keys")
        groups = batch.get("groups")
        for i in range(len(pixels)):
            if keys is not None and int(keys[i]) != NO_KEY:
                image_key = int(keys[i]) // 2  # the same image, mirrored or not, is one face
                if image_key in seen:
                    continue
                seen.add(image_key)
            slot = 0 if quota is None else int(groups[i])
            if len(taken[slot]) < wanted[slot]:
                taken[slot].append(pixels[i].numpy())
                group_of[slot].append(-1 if groups is None else int(groups[i]))
    images = np.stack([image for bucket in taken for image in bucket])
    return images, np.array([g for bucket in group_of for g in bucket], np.int64)


def prove_apart(
    calibration: CalibrationSet,
    benchmark_images: np.ndarray,
    source: Any,
    benchmark_path: str | None,
) -> dict[str, Any]:
    """Check that no calibration face is a benchmark face; return what was checked (for the stage's record).

    Args:
        calibration: the drawn calibration set.
        benchmark_images: the benchmark's uint8 images.
        source: the calibration source section (its files are checked against ``benchmark_path``).
        benchmark_path: the real benchmark's file or folder; None for the procedural benchmark.

    Raises:
        ValueError: a calibration file is (inside) the benchmark, or an image equals a benchmark image or its
            mirror, or the two sets' colours are in different channel orders.
    """
    paths = refuse_benchmark_files(source, benchmark_path)
    bench_hashes: dict[str, int] = {}
    for j, image in enumerate(benchmark_images):
        bench_hashes.setdefault(_digest(image), j)
        bench_hashes.setdefault(_digest(image[..., ::-1]), j)
    same = [(i, bench_hashes[h]) for i, h in enumerate(map(_digest, calibration.images)) if h in bench_hashes]
    if same:
        i, j = same[0]
        raise ValueError(
            f"data.calibration: {len(same)} of the {len(calibration.images)} calibration images are benchmark images "
            f"(calibration image {i} is benchmark image {j} or its mirror; source {calibration.description}): "
            "calibration faces must not be benchmark faces"
        )
    _check_channel_order(calibration.images, benchmark_images, calibration.description)
    procedural = _kinds(source) & {"procedural", "procedural_set"}
    if benchmark_path is None and procedural:
        identities = (
            f"procedural identities of split {CALIBRATION_SPLIT!r} (fixed sets: {CALIBRATION_SPLIT}-set), never "
            f"the benchmark's split {BENCHMARK_SPLIT!r}"
        )
    elif benchmark_path is None:
        identities = "not checkable: the calibration files carry no procedural identities (content and paths checked)"
    else:
        identities = "not checkable without identity labels shared with the real benchmark (content and paths checked)"
    return {
        "identities": identities,
        "files_checked": paths,
        "benchmark": benchmark_path or f"procedural (split {BENCHMARK_SPLIT!r})",
        "images_compared": int(len(calibration.images)),
        "benchmark_images_compared": int(len(benchmark_images)),
        "identical_images": 0,
    }


def refuse_benchmark_files(source: Any, benchmark_path: str | None) -> list[str]:
    """The files a calibration source reads; refused where one is, lies inside, or contains the benchmark's.

    Cheap, so the data stage runs it before drawing a face.
    """
    paths = sorted(_file_paths(source))
    if benchmark_path is not None:
        bench = Path(benchmark_path).resolve()
        for path in paths:
            mine = Path(path).resolve()
            if mine == bench or bench in mine.parents or mine in bench.parents:
                raise ValueError(
                    f"data.calibration.source: {path} overlaps the benchmark {benchmark_path} (calibration files "
                    "must not be benchmark files: INT8 ranges fitted on the benchmark flatter every INT8 result)"
                )
    return paths


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


def _file_paths(source: Any) -> set[str]:
    """Every file or folder a source section (and its nested sources) reads."""
    paths = {str(source.path)} if getattr(source, "path", None) else set()
    for part in _parts(source):
        paths |= _file_paths(part)
    return paths


def _kinds(source: Any) -> set[str]:
    kinds = {source.kind}
    for part in _parts(source):
        kinds |= _kinds(part)
    return kinds


def _check_channel_order(calibration: np.ndarray, benchmark: np.ndarray, description: str) -> None:
    """Refuse a calibration set whose red/blue balance is the benchmark's mirrored (BGR faces against RGB)."""
    mine, theirs = _red_minus_blue(calibration), _red_minus_blue(benchmark)
    if (
        abs(mine) > _COLOUR_MARGIN
        and abs(theirs) > _COLOUR_MARGIN
        and math.copysign(1, mine) != math.copysign(1, theirs)
    ):
        raise ValueError(
            f"data.calibration: the faces of {description} look like the benchmark's with red and blue swapped "
            f"(mean red - blue {mine:+.1f} vs the benchmark's {theirs:+.1f}): expected RGB images, as the benchmark's "
            "(files written BGR, e.g. by OpenCV, must be converted)"
        )


def _red_minus_blue(images: np.ndarray) -> float:
    sample = images[:: max(1, len(images) // 512)].astype(np.float64)
    return float(sample[:, 0].mean() - sample[:, 2].mean())


def calibration_warnings(cfg: Any) -> list[str]:
    """What a recipe's calibration section risks (printed as ``warning:`` lines by check and build)."""
    if cfg.images < RECOMMENDED_IMAGES:
        return [
            f"data.calibration.images: {cfg.images} faces (below {RECOMMENDED_IMAGES}): INT8 ranges fitted on few "
            "faces clip the rarer ones; the INT8 cosine and drift gates will show it"
        ]
    return []
