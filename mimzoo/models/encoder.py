"""The encoder is a plain timm ``VisionTransformer``; these verbs run it on the visible tokens only.

Keeping the encoder a stock timm model (not a subclass or wrapper) makes ``encoder.state_dict()`` a timm
state dict by construction, so export is a copy and plain timm loads it strictly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mimzoo.archs import Arch
from mimzoo.masking import gather_tokens
from mimzoo.models.init import init_mae_weights
from mimzoo.models.pos_embed import sincos_pos_embed_2d


class EncoderOutput(NamedTuple):
    """tokens: (B, P + K, D) the last block's output, after the final norm unless skipped; taps: raw block outputs
    (B, P + K, D), as requested.

    P is the number of prefix (cls/register) tokens, K the number of visible patch tokens.
    """

    tokens: torch.Tensor
    taps: list[torch.Tensor]


def create_encoder(arch: Arch) -> VisionTransformer:
    """A timm ViT of ``arch`` with no head, MAE's initialisation and a frozen 2-D sin-cos position embedding."""
    # weight_init="skip": timm's own truncated-normal init would be overwritten by MAE's below (and costs more
    # than the rest of the build)
    vit = timm.create_model(arch.timm_name, pretrained=False, num_classes=0, weight_init="skip", **arch.model_args)
    if vit.pos_embed is None or vit.patch_embed.dynamic_img_pad:
        raise ValueError(f"{arch.name}: masked encoding needs a fixed absolute position embedding")
    prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
    pos = sincos_pos_embed_2d(vit.embed_dim, arch.grid_size, num_prefix_tokens=prefix)
    vit.pos_embed.data.copy_(pos)
    vit.pos_embed.requires_grad_(False)
    vit.apply(init_mae_weights)
    nn.init.xavier_uniform_(vit.patch_embed.proj.weight.data.view(vit.embed_dim, -1))
    for token in (vit.cls_token, vit.reg_token):
        if token is not None:
            nn.init.normal_(token, std=0.02)
    return vit


def embed_patches(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Patch-embed and add the patch part of the position embedding: (B, 3, H, W) -> (B, N, D)."""
    x = vit.patch_embed(images)
    pos = vit.pos_embed if vit.no_embed_class else vit.pos_embed[:, vit.num_prefix_tokens :]
    return x + pos


def prefix_tokens(vit: VisionTransformer, batch_size: int) -> torch.Tensor:
    """The cls/register tokens with their position slot added: (B, P, D) (P may be 0)."""
    tokens = [t for t in (vit.cls_token, vit.reg_token) if t is not None]
    if not tokens:
        return vit.pos_embed.new_zeros(batch_size, 0, vit.embed_dim)
    x = torch.cat(tokens, dim=1)
    if not vit.no_embed_class:
        x = x + vit.pos_embed[:, : vit.num_prefix_tokens]
    return x.expand(batch_size, -1, -1)


def encode_visible(
    vit: VisionTransformer,
    images: torch.Tensor,
    idx_keep: torch.Tensor,
    taps: Sequence[int] = (),
    final_norm: bool = True,
) -> EncoderOutput:
    """Run the ViT on the visible patches only.

    images: (B, 3, H, W); idx_keep: (B, K) visible patch indices; taps: 0-based block indices whose raw
    outputs (before any norm) are returned too; final_norm=False returns the last block's raw output as tokens
    (for methods that normalise a combination of levels instead, e.g. MFF).
    """
    x = gather_tokens(embed_patches(vit, images), idx_keep)  # (B, K, D)
    x = torch.cat([prefix_tokens(vit, x.shape[0]), x], dim=1)  # (B, P + K, D)
    x = vit.norm_pre(vit.pos_drop(x))
    tapped = []
    wanted = set(taps)
    for i, block in enumerate(vit.blocks):
        x = block(x)
        if i in wanted:
            tapped.append(x)
    return EncoderOutput(vit.norm(x) if final_norm else x, tapped)
