"""Pretraining views, drawn from an explicit generator so every sample is reproducible.

Each transform maps a PIL image to a uint8 tensor (3, S, S); normalisation happens on the training device
(``mimzoo.data.loader.normalize``), which keeps worker-to-GPU copies 4x smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


def rrc_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
            gen: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop sampling (10 tries, then a centre crop): (left, top, w, h)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(3, generator=gen).tolist()
        target_area = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


@dataclass(frozen=True)
class ViewPlan:
    """A view's random draws, per axis (y, x): the source span (start, end) resampled to ``n`` pixels, of which
    ``size`` are kept from offset ``crop`` of the reflect-padded result; then a horizontal flip or not. The PIL
    path and the device path (``mimzoo.data.device_views``) apply the same plan."""

    y: tuple[int, int, int, int]
    x: tuple[int, int, int, int]
    flip: bool


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) uint8."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


class RandomResizedCropFlip:
    """MAE's view: RandomResizedCrop(size, scale=(0.2, 1)), bicubic, then a horizontal flip with p = 0.5."""

    filter, padding = "bicubic", 0  # how ``mimzoo.data.device_views`` resamples the plan

    def __init__(self, size: int, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size, self.scale, self.ratio = size, scale, ratio

    def plan(self, width: int, height: int, gen: torch.Generator) -> ViewPlan:
        left, top, w, h = rrc_box(width, height, self.scale, self.ratio, gen)
        flip = torch.rand(1, generator=gen).item() < 0.5
        return ViewPlan((top, top + h, self.size, 0), (left, left + w, self.size, 0), flip)

    def __call__(self, img: Image.Image, gen: torch.Generator) -> torch.Tensor:
        plan = self.plan(img.width, img.height, gen)
        (top, bottom, _, _), (left, right, _, _) = plan.y, plan.x
        out = img.resize((self.size, self.size), Image.BICUBIC, box=(left, top, right, bottom))
        if plan.flip:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return to_uint8_tensor(out)


class SimpleResizedCropFlip:
    """PixMIM's conservative view (SRC): resize the short side to ``size`` (bilinear), random ``size`` crop of
    the 4-px reflect-padded image, horizontal flip with p = 0.5. No scale jitter: the crop keeps the aspect
    and spans the full short side (up to the padding shift)."""

    filter = "bilinear"

    def __init__(self, size: int, padding: int = 4) -> None:
        self.size, self.padding = size, padding

    def plan(self, width: int, height: int, gen: torch.Generator) -> ViewPlan:
        # torchvision's Resize(size): the short side to size, the long side truncated (int, not round)
        short = min(width, height)
        new_w, new_h = (max(self.size, int(self.size * side / short)) for side in (width, height))
        pad = self.padding
        top = int(torch.randint(0, new_h + 2 * pad - self.size + 1, (1,), generator=gen))
        left = int(torch.randint(0, new_w + 2 * pad - self.size + 1, (1,), generator=gen))
        flip = torch.rand(1, generator=gen).item() < 0.5
        return ViewPlan((0, height, new_h, top), (0, width, new_w, left), flip)

    def __call__(self, img: Image.Image, gen: torch.Generator) -> torch.Tensor:
        plan = self.plan(img.width, img.height, gen)
        (_, _, new_h, top), (_, _, new_w, left) = plan.y, plan.x
        pixels = np.asarray(img.resize((new_w, new_h), Image.BILINEAR), dtype=np.uint8)
        pad = self.padding
        pixels = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        view = torch.from_numpy(pixels[top : top + self.size, left : left + self.size].copy()).permute(2, 0, 1)
        if plan.flip:
            view = view.flip(-1)
        return view


VIEWS = {"rrc": RandomResizedCropFlip, "src": SimpleResizedCropFlip}


def make_view(crop: str, size: int):
    """The pretraining view named by ``--crop`` at ``size`` px."""
    if crop not in VIEWS:
        from mimzoo.errors import MimzooError

        raise MimzooError(f"unknown crop {crop!r}; choose one of: {', '.join(VIEWS)}")
    return VIEWS[crop](size)
