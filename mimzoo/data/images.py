"""Decoding image files, the same way in every command (pretrain, knn, linprobe, finetune, segment, visualize).

- Photos come out as 8-bit RGB, turned upright by their EXIF orientation. 16-bit greyscale (PIL modes ``I;16*``
  and ``I``) is scaled to 8 bits (65535 -> 255), not clipped; palette, grey, CMYK and alpha modes are converted
  by PIL (alpha is dropped, as torchvision's loader does).
- Label maps (segmentation masks) come out exactly as stored: single-channel integer images only, never converted.
- Every failure PIL can raise on a bad file, a decompression bomb included, becomes :class:`UnreadableImage`, so
  callers skip (or name) the file. An image over ``MAX_PIXELS`` is unreadable; PIL's own bomb check stays on.
- An image more than ``MAX_ASPECT`` times longer than wide (or the reverse) is centre-cropped to that aspect: a
  view that resizes the short side (SRC, timm's evaluation resize) then costs at most ``MAX_ASPECT`` x size^2
  pixels; every other image is decoded untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from typing import IO, TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from mimzoo.errors import one_line

# PIL's default MAX_IMAGE_PIXELS (beyond which it warns of a decompression bomb): about 270 MB decoded as RGB
MAX_PIXELS = 89_478_485
MAX_ASPECT = 16
# what Pillow's own fuzz tests accept as "this file is bad", plus its bomb checks
PIL_FAILURES = (OSError, SyntaxError, MemoryError, ValueError, NotImplementedError, OverflowError,
                Image.DecompressionBombError, Image.DecompressionBombWarning)
LABEL_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
T = TypeVar("T")
File = str | PathLike | IO[bytes]


class UnreadableImage(Exception):
    """A file that does not decode to an image mimzoo can use; the message says why, the caller names the file."""


def read_rgb(file: File, max_aspect: int | None = MAX_ASPECT) -> Image.Image:
    """``file`` (a path or a binary file object) as an upright 8-bit RGB image; ``max_aspect=None`` keeps the
    whole image (segmentation, whose masks must stay aligned)."""
    return _decode(file, lambda img: _to_rgb(_cap_aspect(img, max_aspect) if max_aspect else img))


def read_labels(file: File) -> np.ndarray:
    """A label map (H, W) as stored (uint8, uint16 or int32), upright like its image; a mask that is not a
    single-channel integer image is unreadable."""

    def labels(img: Image.Image) -> np.ndarray:
        if img.mode not in LABEL_MODES:
            raise UnreadableImage(f"it is a {img.mode} image ({len(img.getbands())} channel(s)); a mask must be a "
                                  "single-channel label map (8- or 16-bit greyscale or palette PNG)")
        return np.asarray(img, dtype=np.uint8 if img.mode == "1" else None)

    return _decode(file, labels)


def oriented_size(file: File) -> tuple[int, int]:
    """(H, W) of the upright image, from the file's header and its EXIF (no pixel is decoded)."""

    def size(img: Image.Image) -> tuple[int, int]:
        # the base class reads the EXIF met in the header; PNG's own getexif decodes every pixel looking for more
        rotated = Image.Image.getexif(img).get(ExifTags.Base.Orientation, 1) in ROTATED
        return (img.width, img.height) if rotated else (img.height, img.width)

    return _decode(file, size, upright=False)


def _decode(file: File, convert: Callable[[Image.Image], T], upright: bool = True) -> T:
    try:
        with Image.open(file) as img:
            if img.width * img.height > MAX_PIXELS:
                raise UnreadableImage(f"{img.width}x{img.height} pixels, over the limit of {MAX_PIXELS:,} per image")
            if upright:
                ImageOps.exif_transpose(img, in_place=True)
            return convert(img)
    except UnidentifiedImageError:  # its message quotes the file object ("<_io.BytesIO object at 0x...>")
        raise UnreadableImage("not in an image format PIL can decode") from None
    except PIL_FAILURES as exc:
        raise UnreadableImage(one_line(exc)) from None


def _cap_aspect(img: Image.Image, max_aspect: int) -> Image.Image:
    width, height = img.size
    keep_w, keep_h = min(width, max_aspect * height), min(height, max_aspect * width)
    if (keep_w, keep_h) == (width, height):
        return img
    left, top = (width - keep_w) // 2, (height - keep_h) // 2
    return img.crop((left, top, left + keep_w, top + keep_h))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I"):  # 16-bit grey (PNG); PIL's convert would clip every value above 255 to white
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    return img.convert("RGB")
