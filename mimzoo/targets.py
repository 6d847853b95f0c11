"""Reconstruction targets: patchify, norm-pix and their inverses, and image-level filters applied before them.

Image filters (``--target``) turn the normalised input batch into the image a pixel-target method
reconstructs; the encoder always sees the unfiltered image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from mimzoo.data.loader import IMAGENET_MEAN, IMAGENET_STD
from mimzoo.errors import MimzooError


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), ordered (row, col) over patches and (pixel-row, pixel-col, channel) inside."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("bchpwq->bhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, C, H, W) for a square grid; the inverse of :func:`patchify`."""
    b, n, _ = patches.shape
    p, g = patch_size, int(n**0.5)
    x = patches.reshape(b, g, g, p, p, channels)
    x = torch.einsum("bhwpqc->bchpwq", x)
    return x.reshape(b, channels, g * p, g * p)


def norm_pix(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's per-patch normalisation over the last dim: (t - mean) / sqrt(unbiased var + eps)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens of the per-token MSE; pred/target (B, N, K), mask (B, N) with 1 = masked."""
    per_token = (pred - target).pow(2).mean(dim=-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


# PixMIM's radius: 40 px of spectrum at 224 px, scaled with the image side
LOWPASS_RADIUS_AT_224 = 40.0


def lowpass_radius(img_size: int) -> float:
    return LOWPASS_RADIUS_AT_224 * img_size / 224


def lowpass_mask(height: int, width: int, radius: float, device: torch.device) -> torch.Tensor:
    """(H, W) ideal circular low-pass in fftshift-ed coordinates, centred on the DC bin.

    The reference centres the circle half a bin off DC ((H-1)/2); centring it on DC keeps the filter
    conjugate-symmetric, so it passes the spectrum inside the radius unchanged and removes all of it outside.
    """
    rows = torch.arange(height, device=device) - height // 2
    cols = torch.arange(width, device=device) - width // 2
    return (rows[:, None] ** 2 + cols[None, :] ** 2 <= radius**2).float()


def lowpass_filter(images: torch.Tensor, radius: float) -> torch.Tensor:
    """PixMIM's low-frequency target: (B, 3, H, W) normalised -> low-passed, normalised again.

    De-normalise to RGB, per-channel 2-D FFT, ideal circular low-pass, inverse FFT and modulus (as the
    reference), re-normalise. Runs in fp32 on the images' device, even under autocast.
    """
    device = images.device
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    with torch.autocast(device.type, enabled=False):
        rgb = images.float() * std + mean
        spectrum = torch.fft.fftshift(torch.fft.fft2(rgb), dim=(-2, -1))
        spectrum = spectrum * lowpass_mask(*rgb.shape[-2:], radius, device)
        low = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).abs()
        return (low - mean) / std


ImageFilter = Callable[[torch.Tensor], torch.Tensor]
IMAGE_TARGETS = ("pixel", "lowpass")


def image_filter(target: str, img_size: int, radius: float | None = None) -> ImageFilter | None:
    """The image-level filter of a pixel ``--target``: None for raw pixels, the low-pass for ``lowpass``."""
    if target == "pixel":
        return None
    if target == "lowpass":
        radius = radius or lowpass_radius(img_size)
        corner = img_size / 2 * math.sqrt(2)
        if not 0 < radius < corner:
            raise MimzooError(f"--lowpass-radius {radius} is outside (0, {corner:.1f}) for {img_size}px images; "
                              f"pick a radius inside the spectrum (default {lowpass_radius(img_size):.1f})")
        return partial(lowpass_filter, radius=radius)
    raise MimzooError(f"unknown target {target!r}; choose one of: {', '.join(IMAGE_TARGETS)}")
