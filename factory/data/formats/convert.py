"""Detect, inspect and convert the data formats users own (``factory data inspect`` / ``factory data convert``).

Conversions copy the encoded image bytes unchanged wherever the target format stores encoded images, so nothing is
re-compressed on the way between tools.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from factory.data.formats.folders import NO_GROUP, LabelledImages, read_image_folder, read_image_list
from factory.data.formats.recordio import RecordIOReader, write_insightface_pack
from factory.data.formats.rfw import RFW_RACES, read_pairs, read_rfw_encoded, write_rfw
from factory.data.formats.verification_bin import VerificationBin
from factory.data.images import read_rgb
from factory.files import atomic_path

FORMATS = ("recordio", "bin", "rfw", "imagefolder", "list")
TARGETS = ("imagefolder", "recordio", "bin", "rfw")


def detect_format(path: str | os.PathLike[str]) -> str:
    """``recordio`` (.rec), ``bin`` (.bin), ``rfw`` (a folder with test/txts), ``imagefolder`` or ``list``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return "rfw" if (path / "test" / "txts").is_dir() else "imagefolder"
    suffix = path.suffix.lower()
    known = {".rec": "recordio", ".idx": "recordio", ".bin": "bin", ".csv": "list", ".tsv": "list", ".txt": "list"}
    if suffix not in known:
        raise ValueError(f"{path}: unknown data format (expected .rec, .bin, .csv/.tsv, an image folder or RFW root)")
    return known[suffix]


def image_extension(data: bytes) -> str:
    """File extension of encoded image bytes, from their magic number."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "img"


def _decode_problem(where: str, data: bytes | Path) -> str | None:
    """``None`` when the image decodes, else the error (which names ``where``)."""
    try:
        read_rgb(data, where)
    except ValueError as e:
        return str(e)
    return None


def _rfw_races(root: Path) -> list[str]:
    return [r for r in RFW_RACES if (root / "test" / "txts" / r).is_dir()] or sorted(
        p.name for p in (root / "test" / "txts").iterdir() if p.is_dir()
    )


def inspect_data(path: str | os.PathLike[str], sample: int = 8) -> dict[str, Any]:
    """Counts of a dataset and a decode check of its first ``sample`` images.

    Keys: ``format``, ``images``, ``identities``, ``pairs``, ``genuine``, ``impostor``, ``groups`` (name -> images),
    ``decoded`` (how many sampled images decoded) and ``failures`` (``where: why`` for those that did not).
    """
    path = Path(path)
    fmt = detect_format(path)
    info: dict[str, Any] = {"path": str(path), "format": fmt, "images": 0, "identities": 0, "pairs": 0}
    info.update(genuine=0, impostor=0, groups={})
    samples: list[tuple[str, bytes | Path]] = []
    if fmt == "recordio":
        rec = path.with_suffix(".rec")
        with RecordIOReader(rec) as reader:
            if reader.layout == "insightface":  # the header records count identities: no need to read 5 M images
                identities = len(reader.identity_ranges)
            else:
                identities = len({reader.label(k) for k in reader.image_keys})
            info.update(images=len(reader), identities=identities, layout=reader.layout)
            info["groups"] = {NO_GROUP: len(reader)}
            samples = [(f"{rec}: record {k}", reader.record(k).image) for k in reader.image_keys[:sample]]
    elif fmt == "bin":
        data = VerificationBin.load(path)
        info.update(images=len(data.images), pairs=len(data.issame), genuine=int(data.issame.sum()))
        info["impostor"] = info["pairs"] - info["genuine"]
        samples = [(f"{path}: entry {i}", b) for i, b in enumerate(data.images[:sample])]
    elif fmt == "rfw":
        for race in _rfw_races(path):
            pairs = read_pairs(path / "test" / "txts" / race / f"{race}_pairs.txt")
            genuine = sum(p.issame for p in pairs)
            info["pairs"] += len(pairs)
            info["genuine"] += genuine
            info["impostor"] += len(pairs) - genuine
            images = {(p.left if i == 0 else p.right) for p in pairs for i in (0, 1)}
            info["images"] += len(images)
            info["identities"] += len({identity for identity, _ in images})
            info["groups"][race] = len(images)
        images, _ = read_rfw_encoded(path, _rfw_races(path)[0])
        samples = [(f"{path}: {_rfw_races(path)[0]} image {i}", b) for i, b in enumerate(images[:sample])]
    else:
        index = read_image_folder(path) if fmt == "imagefolder" else read_image_list(path)
        info.update(images=len(index), identities=index.identity_count())
        info["groups"] = {g: index.groups.count(g) for g in index.group_names}
        samples = [(str(p), p) for p in index.paths[:sample]]
    failures = [why for where, data in samples if (why := _decode_problem(where, data)) is not None]
    info.update(decoded=len(samples) - len(failures), failures=failures)
    return info


def _labelled(path: Path, fmt: str) -> tuple[list[bytes], list[str], list[str], list[str]]:
    """(encoded images, identities, groups, names) of a labelled source."""
    if fmt == "recordio":
        with RecordIOReader(path.with_suffix(".rec")) as reader:
            records = [(k, reader.record(k)) for k in reader.image_keys]
        images = [r.image for _, r in records]
        names = [f"{k}.{image_extension(r.image)}" for k, r in records]
        return images, [str(int(r.labels[0])) for _, r in records], [NO_GROUP] * len(images), names
    if fmt in ("imagefolder", "list"):
        index: LabelledImages = read_image_folder(path) if fmt == "imagefolder" else read_image_list(path)
        return [p.read_bytes() for p in index.paths], index.identities, index.groups, [p.name for p in index.paths]
    raise ValueError(f"{path}: a {fmt} source has pairs, not identity labels; convert it to bin or rfw")


def _pairs(path: Path, fmt: str) -> dict[str, tuple[list[bytes], np.ndarray]]:
    """Set name -> (encoded pair images, issame) of a pair source."""
    if fmt == "bin":
        data = VerificationBin.load(path)
        return {path.stem.removesuffix("_test"): (data.images, data.issame)}
    if fmt == "rfw":
        return {race: read_rfw_encoded(path, race) for race in _rfw_races(path)}
    raise ValueError(f"{path}: a {fmt} source has identity labels, not pairs; convert it to imagefolder or recordio")


def convert_data(src: str | os.PathLike[str], to: str, out: str | os.PathLike[str]) -> list[Path]:
    """Convert ``src`` to format ``to`` at ``out``; returns the files or folders written.

    - ``imagefolder``: ``OUT/<identity>/<name>`` (``<key>.<ext>`` from RecordIO), bytes unchanged;
    - ``recordio``: an insightface pack ``OUT`` (+ ``.idx`` and ``property``), identities numbered in sorted order;
    - ``bin``: ``OUT`` (one set) or ``OUT/<set>_test.bin`` (RFW: one per race);
    - ``rfw``: an RFW tree at ``OUT`` (a ``.bin`` becomes one race named after it).

    A target folder that holds anything, or a target file that exists, is refused before anything is read or written.
    """
    src, out = Path(src), Path(out)
    fmt = detect_format(src)
    if to not in TARGETS:
        raise ValueError(f"unknown target format {to!r} (expected one of {', '.join(TARGETS)})")
    _check_target_free(out, to)
    if to == "imagefolder":
        images, identities, _, names = _labelled(src, fmt)
        for data, identity, name in zip(images, identities, names, strict=True):
            target = out / identity / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
        return [out]
    if to == "recordio":
        images, identities, _, _ = _labelled(src, fmt)
        # Natural order, so numeric identity folders (from a RecordIO pack) keep their numbers on the way back.
        natural = sorted(set(identities), key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))
        numbers = {name: i for i, name in enumerate(natural)}
        out.parent.mkdir(parents=True, exist_ok=True)
        rec = write_insightface_pack(out, images, [numbers[i] for i in identities])
        with atomic_path(out.parent / "property") as tmp:
            tmp.write_text(f"{len(numbers)},112,112\n")
        return [rec, rec.with_suffix(".idx"), out.parent / "property"]
    sets = _pairs(src, fmt)
    if to == "bin":
        if len(sets) == 1 and out.suffix == ".bin":
            ((images, issame),) = sets.values()
            return [VerificationBin(images, issame).save(out)]
        out.mkdir(parents=True, exist_ok=True)
        return [VerificationBin(i, s).save(out / f"{name}_test.bin") for name, (i, s) in sets.items()]
    return [write_rfw(out, name, images, issame) for name, (images, issame) in sets.items()]


def _check_target_free(out: Path, to: str) -> None:
    """Refuse, before anything is read or written, a target that would mix with or overwrite existing data.

    Folder targets must be empty or absent (a conversion into a used folder would merge two datasets); file targets
    (a ``.rec`` with its ``.idx`` and ``property``, a ``.bin``) must not exist yet.
    """
    if to == "recordio" or (to == "bin" and out.suffix == ".bin"):
        files = [out, out.with_suffix(".idx"), out.parent / "property"] if to == "recordio" else [out]
        taken = [str(f) for f in files if f.exists()]
        if taken:
            verb = "exists" if len(taken) == 1 else "exist"
            raise ValueError(
                f"{', '.join(taken)}: already {verb} (expected a new {to} target; nothing was written: remove it or "
                "choose another path)"
            )
        return
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file (expected an empty or new folder for {to})")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out}: folder is not empty (expected an empty or new folder for {to}; nothing was written)")


def sample_images(path: str | os.PathLike[str], per_group: int = 6) -> dict[str, list[tuple[str, bytes | Path]]]:
    """The first ``per_group`` images of every group of a dataset (for previews): ``(where, encoded bytes or file)``."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "recordio":
        rec = path.with_suffix(".rec")
        with RecordIOReader(rec) as reader:
            return {NO_GROUP: [(f"{rec}: record {k}", reader.record(k).image) for k in reader.image_keys[:per_group]]}
    if fmt in ("bin", "rfw"):
        return {
            name: [(f"{path}: {name} image {i}", data) for i, data in enumerate(images[:per_group])]
            for name, (images, _) in _pairs(path, fmt).items()
        }
    index = read_image_folder(path) if fmt == "imagefolder" else read_image_list(path)
    out: dict[str, list[tuple[str, bytes | Path]]] = {}
    for image, group in zip(index.paths, index.groups, strict=True):
        if len(out.setdefault(group, [])) < per_group:
            out[group].append((str(image), image))
    return out
