"""MAE (He et al., 2021): mask 75% of the patches, encode the visible ones, reconstruct the norm-pix target.

With an image filter it is also PixMIM (the low-pass target; its SRC crop is a data view, see methods/__init__).

Read top to bottom: mask -> encode visible -> decode all -> loss on masked patches (methods.md section 1).
"""

from __future__ import annotations

import torch

from mimzoo.archs import Arch
from mimzoo.masking import random_token_mask
from mimzoo.methods.base import MethodOutput, Pretrainer, Reconstruction, from_prediction, pixel_target, predicted_image
from mimzoo.models.decoder import MaskedDecoder
from mimzoo.models.encoder import create_encoder, encode_visible
from mimzoo.targets import ImageFilter, denorm_pix, masked_mse, norm_pix, patchify


class MAE(Pretrainer):
    def __init__(self, arch: Arch, mask_ratio: float = 0.75, norm_pix_loss: bool = True,
                 image_filter: ImageFilter | None = None) -> None:
        super().__init__()
        self.arch, self.mask_ratio, self.norm_pix_loss = arch, mask_ratio, norm_pix_loss
        self.image_filter = image_filter  # e.g. PixMIM's low-pass: what the decoder reconstructs
        self.encoder = create_encoder(arch)
        self.decoder = MaskedDecoder(
            in_dim=self.encoder.embed_dim,
            num_patches=arch.num_patches,
            out_dim=arch.patch_size**2 * 3,
            dim=arch.decoder_dim,
            depth=arch.decoder_depth,
            num_heads=arch.decoder_heads,
            num_prefix_tokens=self.encoder.num_prefix_tokens,
        )

    @torch.no_grad()
    def target(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, p*p*3): the (filtered) image's patches, per-patch normalised when norm_pix_loss."""
        if self.image_filter is not None:
            images = self.image_filter(images)
        patches = patchify(images, self.arch.patch_size)
        return norm_pix(patches) if self.norm_pix_loss else patches

    def encode(self, images: torch.Tensor, idx_keep: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), visible indices (B, K) -> (B, P + K, D): the features the decoder reads (MFF swaps this)."""
        return encode_visible(self.encoder, images, idx_keep).tokens

    def forward(self, images: torch.Tensor) -> MethodOutput:
        mask = random_token_mask(images.shape[0], self.arch.num_patches, self.mask_ratio, images.device)
        pred = self.decoder(self.encode(images, mask.idx_keep), mask.idx_restore)  # (B, N, p*p*3)
        target = self.target(images)
        return MethodOutput(masked_mse(pred, target, mask.mask), pred, target, mask.mask)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> Reconstruction:
        """(B, 3, S, S) -> the standard panels, plus the filtered target when there is one (PixMIM)."""
        out = self(images)
        target_image, panels = pixel_target(images, self.image_filter)
        predicted = predicted_image(out.pred, target_image, self.arch.patch_size,
                                    denorm_pix if self.norm_pix_loss else None)
        return from_prediction(images, images, predicted, out.mask, self.arch.patch_size, panels, self.norm_pix_loss)
