"""Labelled train / validation splits for the downstream commands (linprobe, knn, finetune).

Data specs:
- ``builtin``: the built-in CIFAR-10 sample (train 2,000 / test 500);
- ``PACK.npz``: the ``train_*`` split for training and ``val_*`` (or ``test_*``) for evaluation;
- a folder with ``train/`` and ``val/`` (or ``test/``), each holding one subfolder per class;
- a folder of class subfolders alone, with ``--val-fraction`` to carve the validation split from it.
``--val-fraction`` always carves the validation split from train (stratified, seeded), for any spec; the data's own
evaluation split (val or test), if it has one, then becomes the test split, measured once at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mimzoo.data.loader import load_readable
from mimzoo.data.sources import BUILTIN_SAMPLE, ImageFolderSource, NpzPack, NpzPackSource, open_source
from mimzoo.errors import MimzooError

Source = ImageFolderSource | NpzPackSource
CARVE = "val-carve"  # the name of a --val-fraction split in results, apart from any split of the data


@dataclass
class Split:
    """A subset of a source: the images at ``indices`` and their labels."""

    source: Source
    indices: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class LabeledSplits:
    """val: the split measured after every epoch: a ``--val-fraction`` carve of train (``carved``: the fraction) or
    else the data's evaluation split, called ``val_name`` in the data (val, test). test: with a carve, the data's
    evaluation split (``test_name``), measured once at the end and reported; None without a carve or where the data
    has none."""

    train: Split
    val: Split
    classes: list[str]
    val_name: str = "val"
    test: Split | None = None
    test_name: str | None = None
    carved: float | None = None

    @property
    def reported(self) -> tuple[Split, str]:
        """The split a result is reported on, and its name: the test split if there is one, else val."""
        return (self.test, self.test_name) if self.test is not None else (self.val, self.val_name)

    def summary(self) -> str:
        """'N train / N val-carve (of train) / N test images': what trains, what each epoch is measured on and
        what is measured once at the end."""
        val = f"{len(self.val)} {self.val_name}" + (" (of train)" if self.carved else "")
        test = f" / {len(self.test)} {self.test_name}" if self.test is not None else ""
        return f"{len(self.train)} train / {val}{test} images"

    def describe(self) -> dict[str, dict[str, object]]:
        """Each split's name in the data and size, for results.json (a carve says what it was carved from)."""
        rows: dict[str, dict[str, object]] = {"train": {"name": "train", "images": len(self.train)},
                                              "val": {"name": self.val_name, "images": len(self.val)}}
        if self.carved:
            rows["val"].update(carved_from="train", fraction=self.carved)
        if self.test is not None:
            rows["test"] = {"name": self.test_name, "images": len(self.test)}
        return rows


def open_labeled(spec: str, val_fraction: float | None = None, seed: int = 0) -> LabeledSplits:
    """Resolve a labelled data spec (module docstring) to train/val splits, with one-line errors."""
    train, val = _train_and_eval_sources(spec)
    if int((train.labels < 0).sum()):
        raise MimzooError(
            f"no labels in {spec}: use a folder of class subfolders (train/CLASS/img.jpg) or an npz pack with "
            "train_labels"
        )
    _check_labels(train, _class_names(train), spec)
    if val is None and not val_fraction:
        raise MimzooError(f"no validation split in {spec}: add a val/ (or test/) folder or pass --val-fraction 0.1")
    if val is not None and _class_names(val) != _class_names(train):
        raise MimzooError(
            f"the classes of the validation split ({len(_class_names(val))}) differ from train's "
            f"({len(_class_names(train))}) in {spec}; give both the same class subfolders"
        )
    if val is not None:
        _check_labels(val, _class_names(train), spec)
    evaluation = (Split(val, np.arange(len(val))), _split_name(val)) if val is not None else (None, None)
    if val_fraction:
        train_idx, val_idx = stratified_split(train.labels, val_fraction, seed)
        return LabeledSplits(Split(train, train_idx), Split(train, val_idx), _class_names(train), CARVE,
                             *evaluation, carved=val_fraction)
    return LabeledSplits(Split(train, np.arange(len(train))), evaluation[0], _class_names(train), evaluation[1])


def _check_labels(source: Source, classes: list[str], spec: str) -> None:
    """Every label must name one of the classes (a label past them would be scored as a class no head has)."""
    wrong = source.labels[(source.labels < 0) | (source.labels >= len(classes))]
    if len(wrong):
        raise MimzooError(f"label {int(wrong[0])} in the {_split_name(source)} split of {spec} is not one of the "
                          f"{len(classes)} classes (0 to {len(classes) - 1}); fix the labels or the class list")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: about ``fraction`` of each class (at least one image) goes to validation."""
    if not 0 < fraction < 1:
        raise MimzooError(f"--val-fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        val.append(members[: max(1, round(fraction * len(members)))])
    val_idx = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx


def _train_and_eval_sources(spec: str) -> tuple[Source, Source | None]:
    if spec == "builtin":
        return NpzPackSource(BUILTIN_SAMPLE, "train"), NpzPackSource(BUILTIN_SAMPLE, "test")
    path = Path(spec).expanduser()
    if path.suffix == ".npz" and path.is_file():
        train = NpzPackSource(path, "train")
        eval_split = next((s for s in ("val", "test") if f"{s}_jpeg" in NpzPack(path)), None)
        return train, NpzPackSource(path, eval_split) if eval_split else None
    if path.is_dir() and (path / "train").is_dir():
        eval_dir = next((path / s for s in ("val", "test") if (path / s).is_dir()), None)
        return ImageFolderSource(path / "train"), ImageFolderSource(eval_dir) if eval_dir else None
    return open_source(spec), None


def _split_name(source: Source) -> str:
    return source.split if isinstance(source, NpzPackSource) else source.root.name


def _class_names(source: Source) -> list[str]:
    return source.classes or [str(c) for c in range(int(source.labels.max()) + 1)]


class LabeledDataset(Dataset):
    """(transformed image, label, index of an unreadable image replaced or -1) for a split: an unreadable image is
    replaced by the next readable one of the split, with that image's label; :class:`SkipReportingLoader` counts
    and names the replaced ones."""

    def __init__(self, split: Split, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.split, self.transform = split, transform
        load_readable(split.source, split.indices, 0)  # a split with no readable image: one line, here

    @property
    def source(self) -> Source:
        return self.split.source

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        img, index, bad = load_readable(self.split.source, self.split.indices, position)
        return self.transform(img), int(self.split.source.labels[index]), bad
