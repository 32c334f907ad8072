"""Training data from files: a labelled source for teachers, an unlabelled one for distillation.

Batches are pure functions of ``(seed, step)`` like the procedural world's, so training on files resumes exactly
too. Images are decoded in the training process: the data benchmark measured decoding at thousands of images/s on
two cores, far above what a student trains at, so workers would add complexity for nothing here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from factory.data.formats.folders import LabelledImages, read_image_folder, read_image_list
from factory.data.formats.recordio import RecordIOReader
from factory.data.mixing import LabelledImageDataset, RecordIODataset, read_flat_folder
from factory.data.procedural import make_generator

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
    """uint8 images of a flat folder, a list or a RecordIO pack (labels ignored), for label-free distillation."""

    def __init__(self, path: str | os.PathLike[str], size: int = 112) -> None:
        path = Path(path)
        if path.suffix in (".rec", ".idx"):
            self.inner: torch.utils.data.Dataset = RecordIODataset(path.with_suffix(".rec"), size=size, flip=True)
        else:
            paths = read_flat_folder(path) if path.is_dir() else read_image_list(path).paths
            index = LabelledImages(paths, ["-"] * len(paths), ["all"] * len(paths), source=str(path))
            self.inner = LabelledImageDataset(index, size=size, flip=True)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.inner[i][0]


def file_batch(dataset: torch.utils.data.Dataset, batch_size: int, step: int, seed: int) -> list:
    """Items of a deterministic random batch: the same ``(seed, step)`` always gives the same items and flips."""
    gen = make_generator("files", seed, step)
    indices = torch.randint(0, len(dataset), (batch_size,), generator=gen)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))  # the flip augmentation's draws
    return [dataset[int(i)] for i in indices]
