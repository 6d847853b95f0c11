"""MAE's learning-rate schedule, on timm's scheduler (which also applies layer-decay groups' ``lr_scale``)."""

from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler

from mimzoo.errors import MimzooError


def warmup_cosine(optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: float, steps_per_epoch: int,
                  min_lr: float) -> CosineLRScheduler:
    """Per-iteration linear warm-up from 0 over ``warmup_epochs``, then half-cosine to ``min_lr``; call
    ``step_update(step)`` with the number of optimizer steps done."""
    peak = max(group["lr"] for group in optimizer.param_groups)
    if min_lr > peak:
        raise MimzooError(f"--min-lr {min_lr:g} is above the peak lr {peak:.3g} (--blr x effective batch / 256), so "
                          "the cosine would climb; lower --min-lr or raise --blr")
    warmup = round(warmup_epochs * steps_per_epoch)
    # a cosine of 0 or 1 steps runs at most its first step (at the peak lr) whatever its length; 2 gives the same
    # lr without timm's "will have no effect" warning
    return CosineLRScheduler(optimizer, t_initial=max(2, epochs * steps_per_epoch - warmup), lr_min=min_lr,
                             warmup_t=warmup, warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)
