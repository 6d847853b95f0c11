"""Random token masking as index tensors, and the gather helpers that apply them."""

from __future__ import annotations

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


def random_token_mask(batch_size: int, num_tokens: int, mask_ratio: float, device: torch.device) -> TokenMask:
    """MAE's per-sample masking: argsort uniform noise, keep the first int(N * (1 - ratio)) tokens."""
    num_keep = int(num_tokens * (1 - mask_ratio))
    noise = torch.rand(batch_size, num_tokens, device=device)
    idx_shuffle = torch.argsort(noise, dim=1)
    idx_restore = torch.argsort(idx_shuffle, dim=1)
    mask = torch.ones(batch_size, num_tokens, device=device)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, 1, idx_restore)
    return TokenMask(idx_shuffle[:, :num_keep], idx_restore, mask)


def gather_tokens(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pick tokens (B, N, D) at indices (B, K) -> (B, K, D)."""
    return torch.gather(tokens, 1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
