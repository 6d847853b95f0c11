"""MAE's transformer decoder: visible tokens + mask tokens, un-shuffled, fixed sin-cos positions."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from mimzoo.masking import gather_tokens
from mimzoo.models.init import init_mae_weights
from mimzoo.models.pos_embed import sincos_pos_embed_2d


class MaskedDecoder(nn.Module):
    """Maps encoder tokens of the visible patches to a prediction for every patch.

    Input (B, P + K, D_enc) from the encoder (P prefix tokens, K visible patches) and the mask's
    idx_restore (B, N); output (B, N, out_dim) in image order, prefix tokens dropped. With out_dim=None the output
    is the final norm's (B, N, dim), for a head that follows (e.g. LocalMIM's scale heads).
    """

    def __init__(
        self,
        in_dim: int,
        num_patches: int,
        out_dim: int | None,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_prefix_tokens: int = 1,
        embed_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.embed = nn.Linear(in_dim, dim, bias=embed_bias)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        grid = int(num_patches**0.5)
        self.register_buffer(
            "pos_embed", sincos_pos_embed_2d(dim, grid, num_prefix_tokens=num_prefix_tokens), persistent=False
        )
        self.blocks = nn.Sequential(
            *[Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=_layer_norm) for _ in range(depth)]
        )
        self.norm = _layer_norm(dim)
        self.pred = nn.Identity() if out_dim is None else nn.Linear(dim, out_dim)
        self.apply(init_mae_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, idx_restore: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # (B, P + K, dim)
        prefix, visible = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        b, n = idx_restore.shape
        masked = self.mask_token.expand(b, n - visible.shape[1], -1)
        x = torch.cat([visible, masked], dim=1)  # (B, N, dim), shuffled order
        x = gather_tokens(x, idx_restore)  # image order
        x = torch.cat([prefix, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.pred(x[:, self.num_prefix_tokens :])


def _layer_norm(dim: int, **kwargs) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6, **kwargs)
