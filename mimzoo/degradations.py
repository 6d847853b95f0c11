"""Beyond Masking's input degradations (methods.md section 5(a)) as batched tensor ops on the training device.

Each maps a batch of clean, ImageNet-normalised views to the encoder's input (B, 3, S, S); the clean view stays
the reconstruction target. Randomness (offsets, fisheye centres) comes from torch's global RNG on the batch's
device, per sample, so a resumed run continues exactly and nothing loops over images in Python.

The reference (sunsmarterjie/beyond_masking) has one folder per degradation, and their masking differs: zoomed-in
and zoomed-out mask 75% of the tokens (their code fails unmasked), while distorted, blurred and decolorized encode
every token (decolorized defaults to --mask_ratio 0.0; the other two default to 0.75 but never mask); distorted and
decolorized take the loss on every token, as mimzoo does for all three (blurred's loss on the masked tokens only
cannot run against its unmasked prediction). ``MASK_RATIOS`` holds those defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

from mimzoo.archs import Arch
from mimzoo.data.loader import IMAGENET_MEAN, IMAGENET_STD
from mimzoo.errors import MimzooError

ZOOM_IN, ZOOM_OUT = "zoom-in", "zoom-out"
# they change the view's geometry: the decoder predicts more than the encoder sees, which only misalign's loss takes
GEOMETRIC = (ZOOM_IN, ZOOM_OUT)
ZOOM_OUT_SCALE = 160 / 224
FISHEYE_STRENGTH = (0.15, 0.25)
SATURATION_FACTOR = 0.3


def zoom_in_ring(size: int) -> int:
    """Width (px) of the border ring around the encoder's S x S window: round(S / 7), a whole number of pixels.

    The view is S + 2 x ring, about (9/7) x S: 288 px with a 32-px ring at S = 224, 42 px with a 5-px ring at S = 32.
    """
    ring = round(size / 7)
    if ring < 1:
        raise MimzooError(f"zoom-in needs images of at least 4 px (got {size}); use a larger arch image size")
    return ring


def zoom_out_size(size: int) -> int:
    """Side (px) of the image zoom-out shrinks onto an S x S canvas: round(S x 160 / 224), 160 at S = 224."""
    return round(ZOOM_OUT_SCALE * size)


def view_size_for(degradation: str, size: int) -> int:
    """The clean view a degradation takes for an S-px encoder input: S + 2 x ring for zoom-in, the shrunk size for
    zoom-out (the reference crops its views at 160 px and upsamples the target), else S."""
    if degradation == ZOOM_IN:
        return size + 2 * zoom_in_ring(size)
    return zoom_out_size(size) if degradation == ZOOM_OUT else size


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size) with ``area`` interpolation, as every resize of the reference's losses
    (adaptive average pooling: bin i averages input pixels floor(i H / size) to ceil((i + 1) H / size) - 1)."""
    return F.interpolate(images, size=(size, size), mode="area")


def centre_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zoom-in: the central (B, C, size, size) window of (B, C, H, W)."""
    top = (images.shape[-2] - size) // 2
    left = (images.shape[-1] - size) // 2
    return images[..., top : top + size, left : left + size]


def canvas_offsets(batch_size: int, small: int, size: int, device: torch.device) -> torch.Tensor:
    """Random per-sample (left, top) offsets (B, 2, 1) in [0, size - small) of a small image on a size x size canvas."""
    return torch.randint(0, size - small, (batch_size, 2, 1), device=device)


def zoom_out(images: torch.Tensor, size: int, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, m, m) -> the images on a (B, C, size, size) canvas at ``offsets`` (B, 2, 1) (left, top; random if
    None), the surround and corners mirroring the images' own borders (m >= size - m)."""
    b, _, m, _ = images.shape
    if offsets is None:
        offsets = canvas_offsets(b, m, size, images.device)
    # Canvas pixel i samples image pixel i - offset; grid_sample's reflection padding (about the image border)
    # mirrors the borders into the surround, and nearest sampling at pixel centres copies pixels exactly.
    coords = (torch.arange(size, device=images.device) - offsets + 0.5) * (2 / m) - 1  # (B, 2, S), normalised
    x, y = coords[:, 0, None, :].expand(b, size, size), coords[:, 1, :, None].expand(b, size, size)
    grid = torch.stack([x, y], dim=-1).to(images.dtype)  # (B, S, S, 2)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="reflection", align_corners=False)


def fisheye(images: torch.Tensor, strength: tuple[float, float] = FISHEYE_STRENGTH) -> torch.Tensor:
    """(B, C, H, W) -> fisheye-warped, per sample: centre c uniform in [-1, 1]^2, strength k uniform in ``strength``.

    Each output pixel at normalised position g samples g + (c - g) |c - g| k, a point between g and c, so the
    warp never reads outside the image.
    """
    b, _, h, w = images.shape
    device = images.device
    centre = torch.rand(b, 1, 1, 2, device=device) * 2 - 1
    k = torch.empty(b, 1, 1, 1, device=device).uniform_(*strength)
    xs, ys = torch.linspace(-1, 1, w, device=device), torch.linspace(-1, 1, h, device=device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    offset = centre - grid
    grid = grid + offset * offset.norm(dim=-1, keepdim=True) * k  # (B, H, W, 2)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) -> Gaussian-blurred with std ``sigma`` px (kernel +-3 sigma, reflected borders).

    The kernel sums to 1, so blurring commutes with the per-channel ImageNet normalisation.
    """
    size = 2 * max(1, math.ceil(3 * sigma)) + 1
    return gaussian_blur(images, kernel_size=[size, size], sigma=[sigma, sigma])


def decolorize(images: torch.Tensor, factor: float = SATURATION_FACTOR) -> torch.Tensor:
    """(B, 3, H, W) normalised -> HSV saturation scaled by ``factor``, hue and value kept, renormalised.

    In HSV each RGB channel is c = V (1 - S g_c(H)) with V = max(R, G, B), so scaling S by f gives exactly
    c' = V - f (V - c): no HSV round trip needed. This must run on un-normalised RGB (V is a max over channels).
    """
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = images * std + mean
    value = rgb.amax(dim=1, keepdim=True)
    return (value - factor * (value - rgb) - mean) / std


# name -> (arch -> degradation). zoom-in and zoom-out also change the data view (see view_size_for).
DEGRADATIONS: dict[str, Callable[[Arch], Callable[..., torch.Tensor]]] = {
    ZOOM_IN: lambda arch: partial(centre_crop, size=arch.img_size),
    ZOOM_OUT: lambda arch: partial(zoom_out, size=arch.img_size),
    "distort": lambda arch: fisheye,
    # 2 px at patch 16 (the std of the 7x7 box the paper's blur approximates): the same blur relative to a token.
    "blur": lambda arch: partial(blur, sigma=arch.patch_size / 8),
    "decolor": lambda arch: decolorize,
}


# name -> the reference folder's mask ratio (see the module docstring): the default --mask-ratio
MASK_RATIOS = {ZOOM_IN: 0.75, ZOOM_OUT: 0.75, "distort": 0.0, "blur": 0.0, "decolor": 0.0}


def check_degradation(name: str) -> str:
    if name not in DEGRADATIONS:
        raise MimzooError(f"unknown degradation {name!r}; choose one of: {', '.join(DEGRADATIONS)}")
    return name


class Degraded(NamedTuple):
    """images: the encoder's input (B, 3, S, S); clean: the clean image the decoder predicts (B, 3, S, S);
    offsets: zoom-out's (left, top) canvas offsets (B, 2, 1), None for the other degradations."""

    images: torch.Tensor
    clean: torch.Tensor
    offsets: torch.Tensor | None = None


class Degradation:
    """The degradation ``name`` bound to ``arch``, the part every method takes with ``--degradation``.

    ``apply``: clean views (B, 3, V, V) -> encoder input (B, 3, S, S); calling it gives both (:class:`Degraded`).
    """

    def __init__(self, name: str, arch: Arch) -> None:
        self.name, self.size = check_degradation(name), arch.img_size
        self.apply = DEGRADATIONS[name](arch)
        self.view_size = view_size_for(name, arch.img_size)

    def __call__(self, views: torch.Tensor) -> Degraded:
        """Clean views (B, 3, V, V) -> the encoder's input and the clean image at S (the view resized)."""
        if views.shape[-1] != self.view_size:
            raise MimzooError(f"{self.name} takes {self.view_size}-px views, not {views.shape[-1]} px; make the data "
                              "view with view_size_for()")
        clean = resize(views, self.size)  # an exact copy when V = S
        if self.name != ZOOM_OUT:
            return Degraded(self.apply(views), clean)
        # the loss places prediction and target where the input went: the offsets are drawn here and kept
        offsets = canvas_offsets(views.shape[0], self.view_size, self.size, views.device)
        return Degraded(self.apply(views, offsets=offsets), clean, offsets)
