"""Fixed 2-D sin-cos position embeddings (MAE): half the channels code the row, half the column."""

from __future__ import annotations

import torch


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(L,) positions -> (L, dim): [sin | cos] at frequencies 1 / 10000^(2i/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Position embedding (1, num_prefix_tokens + grid_size**2, dim); prefix (cls) slots are zero."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    coords = torch.arange(grid_size)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    # MAE's order: the first half codes the column (w), the second the row (h)
    emb = torch.cat([_sincos_1d(dim // 2, cols.flatten()), _sincos_1d(dim // 2, rows.flatten())], dim=1)
    emb = torch.cat([torch.zeros(num_prefix_tokens, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float().unsqueeze(0)
