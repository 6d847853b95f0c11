"""What every method returns, so the trainer, CLI and visualizer never special-case a method."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn


@dataclass
class MethodOutput:
    """loss: scalar; pred/target: (B, N, K) per-patch prediction and target; mask: (B, N), 1 = masked;
    logs: extra scalars for the metrics log (e.g. fusion weights)."""

    loss: torch.Tensor
    pred: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class Pretrainer(nn.Module):
    """A MIM method: ``encoder`` is a plain timm ViT (the exported backbone); everything else is pretraining-only."""

    encoder: VisionTransformer

    def forward(self, images: torch.Tensor) -> MethodOutput:  # images: (B, 3, H, W), normalised
        raise NotImplementedError
