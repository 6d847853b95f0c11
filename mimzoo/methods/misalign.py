"""Beyond Masking (Tian et al., 2022): MAE's masking composed with a second input degradation.

``Misalign`` is MAE (whose forward runs: degrade the clean view -> mask -> encode visible -> decode all -> loss
against the clean image) with its own parts swapped in: the decoder's shape, the per-channel target and the loss
(methods.md section 5). The default degradation, zoom-in ("misalign", the paper's best), uses a view of
about (9/7) x S; the encoder sees its central S x S window and the decoder predicts the whole view resized to S,
so input and output tokens are misaligned by the zoom. Its loss is 0.8 x the masked loss on the window + 0.2 x
the loss on the border ring. Zoom-out places a (160/224) x S view on an S x S canvas; the decoder predicts the
whole view at S, and prediction and target are shrunk back onto the canvas for a masked loss there. The other
degradations keep the S view and use MAE's masked loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mimzoo.archs import Arch
from mimzoo.data.loader import imagenet_stats
from mimzoo.degradations import ZOOM_IN, Degraded, centre_crop, resize
from mimzoo.masking import TokenMask
from mimzoo.methods.base import Reconstruction, from_prediction, pixel_target, predicted_image, to_rgb
from mimzoo.methods.mae import MAE
from mimzoo.targets import at_least_fp32, denorm_pix_per_channel, masked_mse, norm_pix_per_channel, patchify, unpatchify

CENTRE_WEIGHT, RING_WEIGHT = 0.8, 0.2
BOX_COLOUR = (1.0, 0.2, 0.2)
ZOOM_IN_NOTE = ("zoom-in: the encoder sees the boxed centre of the view and the decoder predicts the whole view; "
                "original, masked input and reconstruction show that centre")
ZOOM_OUT_NOTE = ("zoom-out: the encoder sees the view shrunk onto a mirrored canvas and the decoder predicts the whole "
                 "view; the reconstruction is that prediction shrunk back onto the canvas, where the loss is taken")


class Misalign(MAE):
    """MAE with a degradation (zoom-in by default), Beyond Masking's decoder, per-channel norm-pix target and loss.

    ``mae_options``: MAE's other parts (mask ratio, norm-pix, image filter, fusion, mask unit)."""

    denormalise = staticmethod(denorm_pix_per_channel)

    def __init__(self, arch: Arch, degradation: str = ZOOM_IN, **mae_options: Any) -> None:
        super().__init__(arch, degradation=degradation, **mae_options)
        self.view_size = self.degradation.view_size
        self.ring = (self.view_size - arch.img_size) // 2 if degradation == ZOOM_IN else 0  # zoom-in's border

    def decoder_options(self) -> dict[str, Any]:
        """The paper's decoders are 384 wide x 4 blocks x 6 heads (ViT-B) and 512 x 4 x 8 (ViT-L): half the
        encoder's width and heads, which scales to the small archs; its embedding has no bias."""
        heads = self.encoder.blocks[0].attn.num_heads
        return dict(dim=self.encoder.embed_dim // 2, depth=4, num_heads=math.ceil(heads / 2), embed_bias=False)

    @torch.no_grad()
    def target(self, images: torch.Tensor) -> torch.Tensor:
        """Clean (B, 3, S, S) -> (B, N, p*p*3): the (filtered) image's patches; with norm_pix_loss each channel of
        each patch normalised on the de-normalised RGB pixels, as the reference does."""
        if self.image_filter is not None:
            images = self.image_filter(images)
        if not self.norm_pix_loss:
            return patchify(images, self.arch.patch_size)
        mean, std = imagenet_stats(images.device)
        return norm_pix_per_channel(patchify(images * std + mean, self.arch.patch_size))

    def loss(self, pred: torch.Tensor, target: torch.Tensor, mask: TokenMask,
             degraded: Degraded) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """zoom-in's centre + ring loss, zoom-out's loss on the canvas, or the masked MSE for the others."""
        # With nothing masked (ratio 0: degradation alone) every token is a prediction target.
        weights = mask.mask if self.mask_ratio > 0 else torch.ones_like(mask.mask)
        if self.ring:
            return self.zoom_in_loss(pred, target, degraded.images, weights)
        if degraded.offsets is not None:
            return self.zoom_out_loss(pred, target, degraded.offsets, weights), {}
        return masked_mse(pred, target, weights), {}

    def zoom_out_loss(self, pred: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
        """Zoom-out loss on the encoder's canvas, as the reference takes it: prediction and target (B, N, p*p*3),
        both of the whole clean image, are shrunk to the view's size and placed at the input's ``offsets`` with the
        mirrored surround, so each weighted canvas token is compared on the content the encoder's input held there."""
        return masked_mse(self.on_canvas(at_least_fp32(pred), offsets), self.on_canvas(target, offsets), weights)

    def on_canvas(self, tokens: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Patches (B, N, p*p*3) of an S x S image -> the patches of the zoom-out canvas showing it shrunk at
        ``offsets``."""
        p = self.arch.patch_size
        return patchify(self.degradation.apply(resize(unpatchify(tokens, p), self.view_size), offsets=offsets), p)

    def zoom_in_loss(self, pred: torch.Tensor, target: torch.Tensor, window: torch.Tensor,
                     weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Zoom-in loss at the view's resolution V: the prediction of the whole view (pred, (B, N, p*p*3)) is
        resized to V, its centre compared with the encoder's window (B, 3, S, S) on the weighted tokens and its
        border ring with the normalised target resized to V, every ring pixel counting."""
        p, s, v = self.arch.patch_size, self.arch.img_size, self.view_size
        pred_view = resize(unpatchify(at_least_fp32(pred), p), v)  # fp32 under bf16 autocast, like the targets
        window_target = self.target(window)  # norm-pix statistics of the encoder's own patches
        target_view = resize(unpatchify(target, p), v)
        centre = masked_mse(patchify(centre_crop(pred_view, s), p), window_target, weights)
        ring = ring_mse(pred_view, target_view, self.ring)
        loss = CENTRE_WEIGHT * centre + RING_WEIGHT * ring
        return loss, {"loss_centre": centre.detach(), "loss_ring": ring.detach()}

    @torch.no_grad()
    def reconstruct(self, views: torch.Tensor) -> Reconstruction:
        """Clean views (B, 3, V, V) -> MAE's panels, or for zoom-in and zoom-out the panels on the encoder's patch
        grid plus the target view and the predicted view (zoom-in: with the encoder's window boxed)."""
        if not (self.ring or self.degradation.name == "zoom-out"):
            return super().reconstruct(views)
        images, clean, offsets = self.replay_degrade(views)
        out = self(views)
        p, s, v = self.arch.patch_size, self.arch.img_size, self.view_size
        target_image, panels = pixel_target(clean, self.image_filter)
        predicted = predicted_image(out.pred, target_image, p, denorm_pix_per_channel if self.norm_pix_loss else None)
        if self.ring:  # zoom-in: the prediction covers the whole view; the mask is on the encoder's window
            predicted_view = resize(predicted, v)
            panels = {"target view": boxed(to_rgb(views), self.ring, s),
                      "predicted view": boxed(to_rgb(predicted_view), self.ring, s), **panels}
            shown = from_prediction(images, images, centre_crop(predicted_view, s), out.mask, p, panels,
                                    self.norm_pix_loss)
            shown.notes.append(ZOOM_IN_NOTE)
            return shown
        # zoom-out: the prediction covers the whole view; the mask is on the canvas
        panels = {"target view": to_rgb(clean), "predicted view": to_rgb(predicted), **panels}
        on_canvas = self.degradation.apply(resize(predicted, v), offsets=offsets)
        shown = from_prediction(images, images, on_canvas, out.mask, p, panels, self.norm_pix_loss)
        shown.notes.append(ZOOM_OUT_NOTE)
        return shown


def ring_mse(pred: torch.Tensor, target: torch.Tensor, width: int) -> torch.Tensor:
    """Sum of the MSEs of the four border strips ``width`` px wide of (B, C, V, V) images, as the reference
    does: top and bottom span the full width, left and right the rows between them (no pixel counted twice)."""
    inner, full = slice(width, -width), slice(None)
    strips = [(slice(None, width), full), (slice(-width, None), full), (inner, slice(None, width)),
              (inner, slice(-width, None))]
    return sum(F.mse_loss(pred[..., rows, cols], target[..., rows, cols]) for rows, cols in strips)


def boxed(pictures: torch.Tensor, offset: int, size: int) -> torch.Tensor:
    """RGB pictures (B, 3, V, V) with a 1-px box on the border of the size x size window at (offset, offset)."""
    out, colour = pictures.clone(), torch.tensor(BOX_COLOUR).view(1, 3, 1)
    window, first, last = slice(offset, offset + size), offset, offset + size - 1
    out[..., first, window] = out[..., last, window] = colour
    out[..., window, first] = out[..., window, last] = colour
    return out
