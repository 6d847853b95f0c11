"""MAE (He et al., 2021): mask 75% of the patches, encode the visible ones, reconstruct the norm-pix target.

MAE is also the host the other pixel methods are made of (their presets are in methods/__init__): an image filter
makes PixMIM's low-pass target, ``fusion`` MFF's decoder input, and every method's parts compose with it, the mask
unit (LSMAE) and the degradation of the encoder's input (Beyond Masking, whose own decoder and loss subclass this).

Read top to bottom (methods.md section 1): degrade (usually nothing) -> target -> mask -> encode visible (through the
fusion, if any) -> decode all -> loss on masked patches against the clean image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mimzoo.archs import Arch
from mimzoo.degradations import Degradation, Degraded
from mimzoo.fusion import LevelFusion
from mimzoo.masking import TokenMask
from mimzoo.methods.base import (
    MethodOutput,
    Pretrainer,
    Reconstruction,
    degraded_panel,
    from_prediction,
    pixel_target,
    predicted_image,
)
from mimzoo.models.decoder import MaskedDecoder
from mimzoo.models.encoder import create_encoder, encode_visible
from mimzoo.targets import ImageFilter, denorm_pix, masked_mse, norm_pix, patchify


class MAE(Pretrainer):
    """``image_filter``: the target's filter (PixMIM's low-pass); ``fusion``: the blocks MFF's fusion feeds the
    decoder (None: the encoder's output); ``mask_unit`` and ``degradation``: see :class:`Pretrainer`."""

    denormalise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = staticmethod(denorm_pix)

    def __init__(self, arch: Arch, mask_ratio: float = 0.75, norm_pix_loss: bool = True,
                 image_filter: ImageFilter | None = None, fusion: Sequence[int] | None = None, mask_unit: int = 1,
                 degradation: str | None = None) -> None:
        super().__init__()
        self.arch, self.mask_ratio, self.norm_pix_loss = arch, mask_ratio, norm_pix_loss
        self.mask_unit = mask_unit
        self.image_filter = image_filter  # e.g. PixMIM's low-pass: what the decoder reconstructs
        self.degradation = None if degradation is None else Degradation(degradation, arch)
        self.encoder = create_encoder(arch)
        self.decoder = MaskedDecoder(
            in_dim=self.encoder.embed_dim,
            num_patches=arch.num_patches,
            out_dim=arch.patch_size**2 * 3,
            num_prefix_tokens=self.encoder.num_prefix_tokens,
            **self.decoder_options(),
        )
        # after the decoder: MFF's initialisation draws in this order
        self.fusion = None if fusion is None else LevelFusion(self.encoder.embed_dim, fusion)

    def decoder_options(self) -> dict[str, Any]:
        """MAE's decoder: the arch's width, depth and heads (512 x 8 x 16 for ViT-B/L/H)."""
        return dict(dim=self.arch.decoder_dim, depth=self.arch.decoder_depth, num_heads=self.arch.decoder_heads)

    @torch.no_grad()
    def target(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, p*p*3): the (filtered) image's patches, per-patch normalised when norm_pix_loss."""
        if self.image_filter is not None:
            images = self.image_filter(images)
        patches = patchify(images, self.arch.patch_size)
        return norm_pix(patches) if self.norm_pix_loss else patches

    def encode(self, images: torch.Tensor, idx_keep: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), visible indices (B, K) -> (B, P + K, D): the features the decoder reads."""
        if self.fusion is None:
            return encode_visible(self.encoder, images, idx_keep).tokens
        return self.fusion.encode(self.encoder, images, idx_keep)

    def forward(self, views: torch.Tensor) -> MethodOutput:
        with torch.autocast(views.device.type, enabled=False):  # pixels stay fp32
            degraded = self.degrade(views)
            target = self.target(degraded.clean)  # (B, N, p*p*3)
        mask = self.draw_mask(views.shape[0], views.device)
        pred = self.decoder(self.encode(degraded.images, mask.idx_keep), mask.idx_restore)  # (B, N, p*p*3)
        loss, logs = self.loss(pred, target, mask, degraded)
        if self.fusion is not None:
            logs["fusion_weights"] = self.fusion.weights().detach()  # one value per level, for plotting
        return MethodOutput(loss, pred, target, mask.mask, logs)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, mask: TokenMask,
             degraded: Degraded) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MAE's: the MSE on the masked patches."""
        return masked_mse(pred, target, mask.mask), {}

    @torch.no_grad()
    def reconstruct(self, views: torch.Tensor) -> Reconstruction:
        """(B, 3, S, S) -> the standard panels, plus the degraded input and the filtered target when there are."""
        degraded = self.replay_degrade(views)
        out = self(views)
        target_image, panels = pixel_target(degraded.clean, self.image_filter)
        predicted = predicted_image(out.pred, target_image, self.arch.patch_size,
                                    self.denormalise if self.norm_pix_loss else None)
        return from_prediction(degraded.clean, degraded.images, predicted, out.mask, self.arch.patch_size,
                               degraded_panel(degraded, panels), self.norm_pix_loss)
