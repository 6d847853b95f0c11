"""MFF's multi-level fusion (Liu et al., ICCV 2023): the decoder reads a learned fusion of several encoder levels.

The part behind ``--fusion`` for every method with one pixel decoder (``mff`` takes it by default). Read top to
bottom (methods.md section 3): which blocks to tap -> the fusion (a Linear per level but the last, softmax-weighted
sum) -> encoding through it: tap the blocks, fuse, then the encoder's final norm. A method holds it as ``fusion``
beside ``encoder``, so the export stays a plain timm ViT.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mimzoo.archs import Arch
from mimzoo.errors import MimzooError
from mimzoo.models.encoder import encode_visible
from mimzoo.models.init import init_mae_weights

LEVELS = 6  # the MFF configs fuse 6 block outputs of the 12-block ViT-B: [0, 2, 4, 6, 8, 11]


def default_layers(depth: int) -> list[int]:
    """0-based blocks to fuse: block 0, every (depth / 6)-th block after it, and the last block.

    This is the MFF configs' [0, 2, 4, 6, 8, 11] at depth 12; no config ships for other depths, and the same
    spacing keeps the shallow levels the paper found most useful (24 blocks: [0, 4, 8, 12, 16, 23]).
    """
    return sorted({i * depth // LEVELS for i in range(LEVELS - 1)} | {depth - 1})


def parse_layers(text: str) -> list[int]:
    """The ``--mff-layers`` syntax: ``"0,2,4,6,8,11"`` -> [0, 2, 4, 6, 8, 11]."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise MimzooError(f"--mff-layers takes comma-separated block indices like 0,2,4,6,8,11, not {text!r}") from None


def encoder_depth(arch: Arch) -> int:
    """The number of blocks of ``arch``'s ViT, read from a build on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return len(timm.create_model(arch.timm_name, pretrained=False, weight_init="skip", **arch.model_args).blocks)


def resolve_layers(layers: Sequence[int] | None, depth: int) -> list[int]:
    """The blocks to fuse: :func:`default_layers` for None, else ``layers`` checked: increasing block indices
    that end with the last block (the fused feature replaces the encoder output, so later blocks would not train).
    """
    if layers is None:
        return default_layers(depth)
    given = ",".join(map(str, layers))
    if any(not 0 <= i < depth for i in layers):
        raise MimzooError(f"--mff-layers {given}: block indices must be in 0..{depth - 1} for this {depth}-block "
                          f"encoder (default {','.join(map(str, default_layers(depth)))})")
    if any(a >= b for a, b in pairwise(layers)):
        raise MimzooError(f"--mff-layers {given}: list each block once, in increasing order")
    if not layers or layers[-1] != depth - 1:
        raise MimzooError(f"--mff-layers {given}: end with the last block, {depth - 1}; its output is the deepest "
                          f"level of the fusion, which replaces the encoder output")
    return list(layers)


class LevelFusion(nn.Module):
    """Softmax-weighted sum of the outputs of blocks ``layers`` (see :func:`resolve_layers`); every level but the
    last (deepest) first gets its own Linear(D, D)."""

    def __init__(self, dim: int, layers: Sequence[int]) -> None:
        super().__init__()
        self.layers = list(layers)
        self.projections = nn.ModuleList(nn.Linear(dim, dim) for _ in self.layers[:-1])
        self.projections.apply(init_mae_weights)
        # Equal logits: training starts from a uniform average. The (K, 1, 1, 1) shape broadcasts over the
        # stacked levels and, being more than 1-D, keeps AdamW's weight decay on it as in the reference.
        self.logits = nn.Parameter(torch.ones(len(self.layers), 1, 1, 1))

    def weights(self) -> torch.Tensor:
        """(K,) fusion weights, shallow to deep; they sum to 1."""
        return self.logits.softmax(dim=0).flatten()

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """K tensors (B, T, D), shallow to deep -> (B, T, D)."""
        projected = [proj(x) for proj, x in zip(self.projections, levels[:-1], strict=True)] + [levels[-1]]
        return (torch.stack(projected) * self.logits.softmax(dim=0)).sum(dim=0)

    def encode(self, encoder: VisionTransformer, images: torch.Tensor, idx_keep: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), visible indices (B, K) -> (B, P + K, D): the fused levels, then the final norm."""
        # the last level is the last block's raw output: the final norm applies once, after the fusion
        encoded = encode_visible(encoder, images, idx_keep, taps=self.layers[:-1], final_norm=False)
        return encoder.norm(self([*encoded.taps, encoded.tokens]))
