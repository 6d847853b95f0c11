"""Random token masking as index tensors, and the gather helpers that apply them."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class TokenMask(NamedTuple):
    """A per-sample random mask over N patch tokens.

    idx_keep: (B, N_keep) indices of the visible tokens, in shuffled order.
    idx_restore: (B, N) inverse permutation that puts [visible, masked] back into image order.
    mask: (B, N) float, 1 = masked (removed), 0 = visible, in image order.
    """

    idx_keep: torch.Tensor
    idx_restore: torch.Tensor
    mask: torch.Tensor


def random_token_mask(batch_size: int, num_tokens: int, mask_ratio: float, device: torch.device,
                      unit: int = 1) -> TokenMask:
    """MAE's per-sample masking: argsort uniform noise, keep the first int(N * (1 - ratio)) tokens.

    unit > 1 masks unit x unit blocks of patches on the square patch grid (LSMAE's mask unit decoupled from the
    patch): the noise and the ratio are over the blocks, and every patch of a block shares its bit.
    """
    if unit > 1:
        return _unit_mask(batch_size, math.isqrt(num_tokens), unit, mask_ratio, device)
    num_keep = int(num_tokens * (1 - mask_ratio))
    noise = torch.rand(batch_size, num_tokens, device=device)
    idx_shuffle = torch.argsort(noise, dim=1)
    idx_restore = torch.argsort(idx_shuffle, dim=1)
    mask = torch.ones(batch_size, num_tokens, device=device)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, 1, idx_restore)
    return TokenMask(idx_shuffle[:, :num_keep], idx_restore, mask)


def _unit_mask(batch_size: int, grid: int, unit: int, mask_ratio: float, device: torch.device) -> TokenMask:
    """A block mask as a token mask: the blocks' MAE mask, each patch ranked by its block's rank then by its place
    in the block, so the visible blocks' patches come first in ``idx_keep``."""
    blocks = grid // unit
    by_block = random_token_mask(batch_size, blocks * blocks, mask_ratio, device)
    rank = by_block.idx_restore  # (B, blocks^2): each block's place in the shuffled order
    # patch (r, c) lies in block (r // unit, c // unit) at place (r % unit) * unit + c % unit
    line = torch.arange(grid, device=device)
    block_of = ((line // unit)[:, None] * blocks + (line // unit)[None, :]).flatten()  # (N,)
    place = ((line % unit)[:, None] * unit + (line % unit)[None, :]).flatten()
    key = rank[:, block_of] * unit * unit + place  # (B, N), all distinct
    idx_shuffle = torch.argsort(key, dim=1)
    num_keep = by_block.idx_keep.shape[1] * unit * unit
    return TokenMask(idx_shuffle[:, :num_keep], torch.argsort(idx_shuffle, dim=1), by_block.mask[:, block_of])


def gather_tokens(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pick tokens (B, N, D) at indices (B, K) -> (B, K, D)."""
    return torch.gather(tokens, 1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
