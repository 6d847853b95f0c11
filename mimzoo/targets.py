"""Reconstruction targets in patch space: patchify, norm-pix and their inverses."""

from __future__ import annotations

import torch


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
