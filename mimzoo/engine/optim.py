"""AdamW as the commands that train a whole ViT build it (pretrain, finetune, segment): on a GPU torch's fused
kernel, the same update in one launch per parameter group instead of about ten (2% faster for ViT-B/16
pretraining on an H200, benchmarks/results/20261204-h200; a ViT-T with layer decay has 28 groups and a short step)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def adamw(params: Iterable[Any], lr: float, device: torch.device, **options: Any) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, fused=True if device.type == "cuda" else None, **options)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict`` that keeps this run's kernel: the saved groups carry the choice of the run that
    saved them (a CPU run's, or one from before the fused kernel), which would otherwise replace it."""
    kernel = {key: optimizer.defaults[key] for key in ("fused", "foreach") if key in optimizer.defaults}
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group.update(kernel)
