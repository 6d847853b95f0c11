"""What every method returns, so the trainer, CLI and visualizer never special-case a method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mimzoo.archs import Arch
from mimzoo.data.loader import IMAGENET_MEAN, IMAGENET_STD
from mimzoo.degradations import Degradation, Degraded
from mimzoo.masking import TokenMask, random_token_mask
from mimzoo.targets import ImageFilter, patchify, unpatchify

MASKED_GREY = 0.5
NORM_PIX_NOTE = ("norm-pix target: the reconstruction is de-normalised with each patch's own mean and std taken from "
                 "the original image (as MAE's demo does), so those statistics come from the ground truth, "
                 "masked patches included")
Panels = dict[str, torch.Tensor]  # name -> (B, 3, h, w) RGB in [0, 1], in display order


@dataclass
class MethodOutput:
    """loss: scalar; pred/target: (B, N, K) per-patch prediction and target; mask: (B, N), 1 = masked;
    logs: extra scalars for the metrics log (e.g. fusion weights)."""

    loss: torch.Tensor
    pred: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Reconstruction:
    """What a method makes of a batch, as RGB pictures in [0, 1] (``mimzoo.viz`` draws them, one row per image).

    original: (B, 3, S, S) the clean image on the encoder's patch grid; masked: (B, 3, S, S) the encoder's
    input, masked patches grey; reconstruction: (B, 3, S, S) the prediction as an image, None where the target is
    not pixels (HOG); pasted: the reconstruction with the original's visible patches put back (None with it);
    panels: the method's further pictures (B, 3, h, w) by name, in display order; notes: how to read them.
    """

    original: torch.Tensor
    masked: torch.Tensor
    reconstruction: torch.Tensor | None
    pasted: torch.Tensor | None
    panels: Panels = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Pretrainer(nn.Module):
    """A MIM method: ``encoder`` is a plain timm ViT (the exported backbone); everything else is pretraining-only.

    The parts every method takes: ``mask_unit`` (``--mask-unit``: the side, in patches, of the square blocks the
    mask is drawn on) and ``degradation`` (``--degradation``: what the encoder's input goes through, the clean
    image staying the target; None: nothing).
    """

    encoder: VisionTransformer
    arch: Arch
    mask_ratio: float
    mask_unit: int = 1
    degradation: Degradation | None = None

    def draw_mask(self, batch_size: int, device: torch.device) -> TokenMask:
        return random_token_mask(batch_size, self.arch.num_patches, self.mask_ratio, device, unit=self.mask_unit)

    @torch.no_grad()
    def degrade(self, views: torch.Tensor) -> Degraded:
        """Clean views (B, 3, V, V) -> the encoder's input and the clean image (both the views without a
        degradation). Its randomness is drawn before the mask, on fp32 pixels even under autocast."""
        if self.degradation is None:
            return Degraded(views, views)
        with torch.autocast(views.device.type, enabled=False):
            return self.degradation(views)

    def replay_degrade(self, views: torch.Tensor) -> Degraded:
        """:meth:`degrade` as the next ``forward`` will draw it (on a copy of the RNG state), for the figures."""
        with torch.random.fork_rng(devices=[views.device] if views.is_cuda else []):
            return self.degrade(views)

    def forward(self, images: torch.Tensor) -> MethodOutput:  # images: (B, 3, H, W), normalised
        raise NotImplementedError

    def reconstruct(self, images: torch.Tensor) -> Reconstruction:
        """The method's data view (B, 3, V, V), normalised -> its reconstruction as pictures. The mask (and any
        random degradation) comes from torch's global RNG as in ``forward``: seed it for a reproducible figure."""
        raise NotImplementedError


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised (B, 3, H, W) -> RGB in [0, 1], float32 on the CPU (a picture, not a model input)."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.detach().float().cpu() * std + mean).clamp(0, 1)


def pixel_target(images: torch.Tensor, image_filter: ImageFilter | None) -> tuple[torch.Tensor, Panels]:
    """The image (B, 3, S, S) whose patches a pixel method predicts, and a panel showing it when it is filtered
    (e.g. PixMIM's low-pass target)."""
    if image_filter is None:
        return images, {}
    target = image_filter(images)
    return target, {"filtered target": to_rgb(target)}


def predicted_image(pred: torch.Tensor, target_image: torch.Tensor, patch_size: int,
                    denormalise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """Per-patch prediction (B, N, p*p*3) -> (B, 3, S, S) normalised like the input. denormalise: the inverse of
    the method's norm-pix given the target image's own patches (None for raw pixel targets)."""
    pred = pred.detach().float()
    if denormalise is not None:
        pred = denormalise(pred, patchify(target_image.float(), patch_size))
    return unpatchify(pred, patch_size)


def pixel_mask(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Patch mask (B, N), 1 = masked -> (B, 1, S, S) float on the CPU, for pictures."""
    grid = round(mask.shape[1] ** 0.5)
    pixels = mask.detach().float().cpu().view(-1, 1, grid, grid)
    return pixels.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def hide_masked(inputs: torch.Tensor, mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The encoder's input (B, 3, S, S), normalised -> RGB in [0, 1] with the masked patches grey."""
    masked = pixel_mask(mask, patch_size)
    return to_rgb(inputs) * (1 - masked) + MASKED_GREY * masked


def from_prediction(original: torch.Tensor, inputs: torch.Tensor, predicted: torch.Tensor, mask: torch.Tensor,
                    patch_size: int, panels: Panels, norm_pix: bool) -> Reconstruction:
    """The standard panels of a pixel method from (B, 3, S, S) normalised images on one patch grid: the clean
    original, the encoder's input and the predicted image; mask (B, N), 1 = masked."""
    masked = pixel_mask(mask, patch_size)
    original, reconstruction = to_rgb(original), to_rgb(predicted)
    return Reconstruction(
        original=original,
        masked=hide_masked(inputs, mask, patch_size),
        reconstruction=reconstruction,
        pasted=original * (1 - masked) + reconstruction * masked,
        panels=panels,
        notes=[NORM_PIX_NOTE] if norm_pix else [],
    )


def degraded_panel(degraded: Degraded, panels: Panels) -> Panels:
    """``panels`` led by the encoder's degraded input when it differs from the clean image."""
    if degraded.images is degraded.clean:
        return panels
    return {"degraded input": to_rgb(degraded.images), **panels}
