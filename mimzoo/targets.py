"""Reconstruction targets: patchify, norm-pix and their inverses, and image-level filters applied before them.

Image filters (``--target``) turn the normalised input batch into the image a pixel-target method
reconstructs; the encoder always sees the unfiltered image. HOG (LocalMIM's target) describes local gradients
instead of pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch.nn import functional as F

from mimzoo.data.loader import imagenet_stats
from mimzoo.device_constants import device_constant
from mimzoo.errors import MimzooError


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32 if it is in a lower precision (bf16 under autocast), else as it is: targets and losses are
    computed in fp32, and fp64 stays fp64 (the side-by-side comparisons with the reference code run in fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


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


def norm_pix_per_channel(patches: torch.Tensor, channels: int = 3, eps: float = 1e-6) -> torch.Tensor:
    """Beyond Masking's variant, (B, N, p*p*C) -> same: each channel of each patch normalised on its own,
    (t - mean) / (unbiased std + eps) over the patch's p*p pixels (methods.md section 5(b))."""
    b, n, k = patches.shape
    x = patches.reshape(b, n, k // channels, channels)
    x = (x - x.mean(dim=2, keepdim=True)) / (x.std(dim=2, keepdim=True) + eps)
    return x.reshape(b, n, k)


def denorm_pix(normalised: torch.Tensor, reference: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The inverse of :func:`norm_pix` with the statistics of ``reference`` (B, N, K), the un-normalised patches:
    how MAE's demo shows a norm-pix prediction as pixels (it takes each patch's mean and variance from the original)."""
    return normalised * (reference.var(dim=-1, keepdim=True) + eps) ** 0.5 + reference.mean(dim=-1, keepdim=True)


def denorm_pix_per_channel(normalised: torch.Tensor, reference: torch.Tensor, channels: int = 3,
                           eps: float = 1e-6) -> torch.Tensor:
    """The inverse of :func:`norm_pix_per_channel` with the per-channel statistics of ``reference`` (B, N, K)."""
    b, n, k = normalised.shape
    x, ref = normalised.reshape(b, n, k // channels, channels), reference.reshape(b, n, k // channels, channels)
    return (x * (ref.std(dim=2, keepdim=True) + eps) + ref.mean(dim=2, keepdim=True)).reshape(b, n, k)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens of the per-token MSE; pred/target (B, N, K), mask (B, N) with 1 = masked."""
    per_token = (pred - target).pow(2).mean(dim=-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


# PixMIM's radius: 40 px of spectrum at 224 px, scaled with the image side
LOWPASS_RADIUS_AT_224 = 40.0


def lowpass_radius(img_size: int) -> float:
    return LOWPASS_RADIUS_AT_224 * img_size / 224


@device_constant
def lowpass_mask(height: int, width: int, radius: float, device: torch.device) -> torch.Tensor:
    """(H, W) PixMIM's ideal circular low-pass in fftshift-ed coordinates, as the reference builds it: 1 where
    (i - (H-1)/2)^2 + (j - (W-1)/2)^2 <= radius^2, else 0.

    For even sizes the centre lies half a bin before DC on both axes, so the circle is not symmetric about DC
    (5024 bins at 224 px / r = 40, 112 at 32 px / r = 40 * 32 / 224): frequencies f and -f can fall on opposite
    sides of it, and the filtered image is complex, which is why the reference keeps its modulus.
    """
    # fp64, as the reference's Python floats: half-integers and their squares are exact there, on any device; made
    # on the device, so a compiled step (which builds it in its graph) copies nothing from the host
    rows = torch.arange(height, dtype=torch.float64, device=device) - (height - 1) / 2
    cols = torch.arange(width, dtype=torch.float64, device=device) - (width - 1) / 2
    return (rows[:, None] ** 2 + cols[None, :] ** 2 <= radius**2).float()


def lowpass_filter(images: torch.Tensor, radius: float) -> torch.Tensor:
    """PixMIM's low-frequency target: (B, 3, H, W) normalised -> low-passed, normalised again.

    De-normalise to RGB, per-channel 2-D FFT, the reference's circular mask (:func:`lowpass_mask`), inverse FFT,
    modulus, re-normalise. Runs in fp32 on the images' device, even under autocast (fp64 input stays fp64).
    """
    device = images.device
    mean, std = imagenet_stats(device)
    with torch.autocast(device.type, enabled=False):
        rgb = at_least_fp32(images) * std + mean
        # The reference masks the fftshift-ed spectrum and inverse-transforms it unshifted; that only multiplies
        # the result by a unit-modulus phase ramp, so masking in the FFT's own layout gives the same modulus
        # without shifting the spectrum every step.
        mask = torch.fft.ifftshift(lowpass_mask(*rgb.shape[-2:], radius, device))
        low = torch.fft.ifft2(torch.fft.fft2(rgb) * mask).abs()
        return (low - mean) / std


ImageFilter = Callable[[torch.Tensor], torch.Tensor]
IMAGE_TARGETS = ("pixel", "lowpass")


def image_filter(target: str, img_size: int, radius: float | None = None) -> ImageFilter | None:
    """The image-level filter of a pixel ``--target``: None for raw pixels, the low-pass for ``lowpass``."""
    if target == "pixel":
        return None
    if target == "lowpass":
        radius = lowpass_radius(img_size) if radius is None else radius
        corner = img_size / 2 * math.sqrt(2)
        if not 0 < radius < corner:
            raise MimzooError(f"--lowpass-radius {radius} is outside (0, {corner:.1f}) for {img_size}px images; "
                              f"pick a radius inside the spectrum (default {lowpass_radius(img_size):.1f})")
        return partial(lowpass_filter, radius=radius)
    raise MimzooError(f"unknown target {target!r}; choose one of: {', '.join(IMAGE_TARGETS)}")


HOG_BINS = 9  # the paper's; its ViT-L recipe uses 18
HOG_BIAS_BOUND = 1 / 3  # the reference's --hog_bias: nn.Conv2d(1, 2, 3)'s default bias init, U(-1/sqrt(9), 1/sqrt(9))


def hog_features(images: torch.Tensor, cells: Sequence[int], nbins: int = HOG_BINS,
                 bias: torch.Tensor | None = None) -> list[torch.Tensor]:
    """LocalMIM's HOG targets: (B, C, H, W) -> for each cell size c, (B, (H/c) * (W/c), C * nbins), cells row-major,
    features ordered (channel, bin).

    Per channel, as the reference's frozen conv: two Sobel responses (reflect padding), left minus right and top
    minus bottom, plus ``bias`` ((len(cells), 2): the reference's ``--hog_bias``, one frozen random pair per cell
    size, or None). The orientation atan2(first, second) is measured from the y axis, so a vertical edge votes in
    bin nbins // 2 and a horizontal one in bin 0; it is hard-binned (floor(angle / pi * nbins) mod nbins, one bin
    for angle and angle + pi), each pixel voting with its gradient magnitude. The votes are averaged over each
    c x c cell and every cell's histogram is L2-normalised per channel (a flat cell stays 0 without a bias).
    Cell sizes must be multiples of the smallest and divide H and W. Runs in fp32 (fp64 for fp64 input) on the
    images' device.
    """
    channels, finest = images.shape[1], min(cells)
    with torch.autocast(images.device.type, enabled=False):
        x = F.pad(at_least_fp32(images), (1, 1, 1, 1), mode="reflect")
        # Sobel as a central difference, then [1, 2, 1] smoothing across it: differencing first keeps flat regions
        # exactly 0, where a 3x3 conv leaves ~1e-7 rounding that the L2 normalisation would blow up to unit norm
        dx, dy = x[..., :-2] - x[..., 2:], x[..., :-2, :] - x[..., 2:, :]  # left - right, top - bottom
        across = dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]  # (B, C, H, W)
        down = dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]
        if bias is None:
            hist = _orientation_histograms(across, down, nbins, finest)
            # coarser cells average the finest cells' averages: one binning serves every scale
            return [_cell_features(F.avg_pool2d(hist, cell // finest), channels, nbins) for cell in cells]
        # a bias shifts the gradients differently per scale: each scale bins its own
        return [_cell_features(_orientation_histograms(across + b[0], down + b[1], nbins, cell), channels, nbins)
                for cell, b in zip(cells, bias.to(x.dtype), strict=True)]


def _orientation_histograms(across: torch.Tensor, down: torch.Tensor, nbins: int, cell: int) -> torch.Tensor:
    """Sobel responses (B, C, H, W) -> (B, C * nbins, H / cell, W / cell): magnitude votes per orientation bin,
    averaged over each cell."""
    magnitude = torch.hypot(across, down)
    # angle / pi * nbins lies in [-nbins, nbins]; the modulo folds angle and angle + pi into one bin
    bins = torch.floor(torch.atan2(across, down) / math.pi * nbins).long() % nbins
    # one pooled map per bin keeps memory at a few image-sized tensors, not nbins of them
    return torch.stack([F.avg_pool2d(magnitude * (bins == k), cell) for k in range(nbins)], dim=2).flatten(1, 2)


def _cell_features(hist: torch.Tensor, channels: int, nbins: int) -> torch.Tensor:
    """(B, C * nbins, h, w) cell histograms -> (B, h * w, C * nbins), each channel's histogram L2-normalised."""
    return F.normalize(hist.unflatten(1, (channels, nbins)), dim=2).flatten(1, 2).flatten(2).transpose(1, 2)


def hog_picture(features: torch.Tensor, nbins: int = HOG_BINS) -> torch.Tensor:
    """HOG features (B, N, C * nbins) on a square grid of cells (see :func:`hog_features`) -> (B, 3, g, g) RGB in
    [0, 1]: hue = each cell's dominant gradient orientation, brightness = how much it dominates (0: a flat or
    isotropic cell, 1: every vote in one bin). Negative bins (a prediction's) count as 0.

    The channels' histograms are summed; orientation is unsigned, so the bins are averaged as vectors at twice
    their centre angle (a 179-degree and a 1-degree gradient agree) and the mean angle is halved back into hue.
    """
    b, n, k = features.shape
    hist = features.float().reshape(b, n, k // nbins, nbins).clamp(min=0).sum(dim=2)  # (B, N, nbins)
    doubled = (torch.arange(nbins, device=features.device) + 0.5) * (2 * math.pi / nbins)
    x, y = (hist * doubled.cos()).sum(-1), (hist * doubled.sin()).sum(-1)
    strength = (torch.hypot(x, y) / hist.sum(-1).clamp(min=1e-6)).clamp(max=1)  # <= 1 but for rounding
    hue = torch.atan2(y, x) / (2 * math.pi) % 1
    # HSV -> RGB at full saturation: channel n of (R, G, B) = v (1 - clamp(min(k, 4 - k), 0, 1)), k = (n + 6 h) mod 6
    sector = (torch.tensor([5.0, 3.0, 1.0], device=features.device) + 6 * hue[..., None]) % 6
    rgb = strength[..., None] * (1 - torch.minimum(sector, 4 - sector).clamp(0, 1))  # (B, N, 3)
    grid = math.isqrt(n)
    return rgb.transpose(1, 2).reshape(b, 3, grid, grid)
