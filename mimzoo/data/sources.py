"""Image sources: a folder of image files, an npz pack of JPEG bytes, or the built-in sample.

A source only knows how to list its images and decode them (``mimzoo.data.images``, the decoder of every command);
augmentation lives in ``transforms.py``.
Data specs on the command line:
- ``builtin`` (or ``builtin:test``): the CIFAR-10 sample shipped in the package;
- ``PATH.npz`` or ``PATH.npz:SPLIT``: an npz pack with ``SPLIT_jpeg`` + ``SPLIT_offsets`` (labels optional);
- a folder: images found recursively (jpg, jpeg, png, webp, bmp); class subfolders give labels.
"""

from __future__ import annotations

import copy
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from mimzoo.data.images import read_rgb
from mimzoo.errors import MimzooError, not_a_zip, one_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
BUILTIN_SAMPLE = Path(__file__).parent / "sample" / "cifar10_sample.npz"


class ImageFolderSource:
    """Every image under ``root`` (recursive, sorted). Labels come from the first-level subfolder when all
    images sit in subfolders (ImageNet layout); a flat folder has no labels (-1)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.paths:
            raise MimzooError(
                f"no images found in {root} (looked recursively for {', '.join(IMAGE_EXTENSIONS)}); "
                "point --data at a folder of images or an .npz pack"
            )
        parts = [p.relative_to(root).parts for p in self.paths]
        if all(len(part) > 1 for part in parts):
            self.classes = sorted({part[0] for part in parts})
            index = {name: i for i, name in enumerate(self.classes)}
            self.labels = np.array([index[part[0]] for part in parts], dtype=np.int64)
        else:
            self.classes = []
            self.labels = np.full(len(self.paths), -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return read_rgb(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def subset(self, positions: np.ndarray) -> ImageFolderSource:
        """The images at ``positions`` (``--limit``), with the labels and classes of the whole folder."""
        part = copy.copy(self)
        part.paths, part.labels = [self.paths[i] for i in positions], self.labels[positions]
        return part


class NpzPack:
    """An npz file opened for reading: its keys, and its arrays loaded on access; a file that is not a readable npz
    (empty, truncated, another format, pickled objects) is a one-line error naming it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        why = not_a_zip(path)
        if why == "not a zip archive":
            with open(path, "rb") as file:
                if file.read(6) == b"\x93NUMPY":
                    raise MimzooError(f"{path} is a single .npy array, not an npz pack; pass a pack made with "
                                      "numpy.savez")
        if why is not None:
            raise MimzooError(f"{path} is not an npz pack ({why}); pass a pack made with numpy.savez")
        try:
            self._npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise MimzooError(f"cannot read {path} as an npz pack ({one_line(exc, 160)}); pass a pack made with "
                              "numpy.savez") from None
        self.keys = set(self._npz.files)

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._npz[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise MimzooError(f"cannot read {key} from {self.path} ({one_line(exc, 160)}): the pack is damaged; "
                              "write it again with numpy.savez") from None

    def images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``SPLIT_jpeg`` (1-D uint8 bytes) and ``SPLIT_offsets`` (N + 1 non-decreasing positions in them),
        checked so that every image is a slice of the bytes."""
        buffer, offsets = self[f"{split}_jpeg"], self[f"{split}_offsets"]
        if buffer.ndim != 1 or buffer.dtype != np.uint8:
            raise MimzooError(f"{self.path}: {split}_jpeg must be the images' bytes (1-D uint8), not "
                              f"{buffer.dtype} of shape {buffer.shape}; write the pack again")
        if (offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer) or len(offsets) == 0
                or offsets[0] < 0 or offsets[-1] > len(buffer) or (np.diff(offsets) < 0).any()):
            raise MimzooError(f"{self.path}: {split}_offsets must be N + 1 non-decreasing integer positions from 0 "
                              f"to the length of {split}_jpeg ({len(buffer)}); the pack is damaged, write it again")
        return buffer, offsets

    def per_image(self, key: str, count: int) -> np.ndarray:
        """An integer array with one entry (label, or label map) per image of a split."""
        values = self[key]
        if not np.issubdtype(values.dtype, np.integer) or values.ndim == 0 or len(values) != count:
            raise MimzooError(f"{self.path}: {key} must hold one integer entry per image ({count}), not "
                              f"{values.dtype} of shape {values.shape}; write the pack again")
        return values


class NpzPackSource:
    """Images stored as concatenated encoded bytes (``SPLIT_jpeg``) with ``SPLIT_offsets`` (N + 1,)."""

    def __init__(self, path: Path, split: str = "train", name: str | None = None) -> None:
        """name: what the user called the pack (``builtin``), for messages; default its path."""
        self.path, self.split = path, split
        pack, name = NpzPack(path), name or str(path)
        if f"{split}_jpeg" not in pack or f"{split}_offsets" not in pack:
            splits = sorted(k[: -len("_jpeg")] for k in pack.keys if k.endswith("_jpeg"))
            raise MimzooError(
                f"{name} has no split {split!r} (needs keys {split}_jpeg and {split}_offsets); "
                f"splits in the pack: {', '.join(splits) or 'none'}; use --data {name}:SPLIT"
            )
        self.buffer, self.offsets = pack.images(split)
        labels_key = f"{split}_labels"
        self.labels = (pack.per_image(labels_key, len(self)).astype(np.int64) if labels_key in pack
                       else np.full(len(self), -1))
        self.classes = [str(c) for c in pack["classes"]] if "classes" in pack else []
        if len(self) == 0:
            raise MimzooError(f"no images found in split {split!r} of {path}")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def load(self, index: int) -> Image.Image:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return read_rgb(io.BytesIO(self.buffer[start:end].tobytes()))

    def describe(self, index: int) -> str:
        return f"{self.path}:{self.split}[{index}]"

    def subset(self, positions: np.ndarray) -> NpzPackSource:
        """The images at ``positions`` (``--limit``) as a pack of their own: their bytes, one after another."""
        part = copy.copy(self)
        starts, ends = self.offsets[positions], self.offsets[positions + 1]
        part.buffer = np.concatenate([self.buffer[a:b] for a, b in zip(starts, ends, strict=True)])
        part.offsets = np.concatenate([[0], np.cumsum(ends - starts)])
        part.labels = self.labels[positions]
        return part


def open_source(spec: str) -> ImageFolderSource | NpzPackSource:
    """Resolve a data spec (see the module docstring) to a source, with one-line errors for bad specs."""
    path_str, split = spec, "train"
    if spec.startswith("builtin:") or ".npz:" in spec:
        path_str, split = spec.rsplit(":", 1)
        if not split:
            raise MimzooError(f"--data {spec} names no split after the ':'; add one ({path_str}:SPLIT) or drop the ':'")
    if path_str == "builtin":
        return NpzPackSource(BUILTIN_SAMPLE, split, "builtin")
    path = Path(path_str).expanduser()
    if not path.exists():
        raise MimzooError(f"data path {path} does not exist; pass --data with a folder of images or an .npz pack")
    if path.is_dir():
        return ImageFolderSource(path)
    if path.suffix == ".npz":
        return NpzPackSource(path, split)
    raise MimzooError(f"data path {path} is neither a folder nor an .npz pack; pass a folder of images or a .npz file")
