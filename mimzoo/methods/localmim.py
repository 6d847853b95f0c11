"""LocalMIM (Wang et al., CVPR 2023): local multi-scale reconstruction at several encoder layers.

Read top to bottom (methods.md section 4): which scales fit the arch and target -> which blocks they read -> a
small MAE decoder plus a scale head per scale -> per-scale masks -> mask, encode visible, decode every tap, and
sum each scale's masked MSE against its HOG or norm-pix region target.

A scale s gives an output grid of (patch grid x s) cells of patch / s px: at 224/16 the paper's 4, 2, 1, 0.5
predict 56x56 4-px cells up to 7x7 32-px regions. n scales, sorted fine to coarse, read the last n of the
paper's blocks [1, 3, depth-3, depth-1] (0-based), so the deepest scale always reads the last block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.layers import LayerNorm2d
from torch import nn
from torch.nn import functional as F

from mimzoo.archs import Arch
from mimzoo.degradations import Degradation
from mimzoo.errors import MimzooError
from mimzoo.masking import TokenMask
from mimzoo.methods.base import (
    MethodOutput,
    Pretrainer,
    Reconstruction,
    degraded_panel,
    from_prediction,
    hide_masked,
    pixel_target,
    predicted_image,
    to_rgb,
)
from mimzoo.models.decoder import MaskedDecoder
from mimzoo.models.encoder import create_encoder, encode_visible
from mimzoo.targets import (
    HOG_BIAS_BOUND,
    HOG_BINS,
    IMAGE_TARGETS,
    denorm_pix,
    hog_features,
    hog_picture,
    image_filter,
    masked_mse,
    norm_pix,
    patchify,
)

PAPER_SCALES = (4.0, 2.0, 1.0, 0.5)
TARGETS = ("hog", *IMAGE_TARGETS)
DECODER_DIM, DECODER_DEPTH, DECODER_HEADS = 256, 1, 8  # the paper's for every ViT size
MIN_HOG_CELL = 2  # px: a 1-px cell holds a single gradient, not a histogram
HOG_NOTE = ("HOG panels, one pixel per cell: hue = the cell's dominant gradient orientation, brightness = how much "
            "it dominates (black: flat, or no single orientation)")


def parse_scales(text: str) -> list[float]:
    """The ``--localmim-scales`` syntax: ``"4,2,1,0.5"`` -> [4.0, 2.0, 1.0, 0.5]."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise MimzooError(f"--localmim-scales takes comma-separated scales like 4,2,1,0.5, not {text!r}") from None


def scale_problem(arch: Arch, target: str, scale: float) -> str | None:
    """Why ``scale`` cannot exist for ``arch`` and ``target`` (a phrase for an error), or None if it can."""
    if scale <= 0 or not math.log2(scale).is_integer():
        return "scales are powers of two"
    pool, grid = round(1 / scale), arch.grid_size
    if scale < 1 and grid % pool:
        return f"it pools {pool}x{pool} patches but the patch grid is {grid}x{grid}"
    size = arch.patch_size / scale
    smallest = MIN_HOG_CELL if target == "hog" else 1
    if not size.is_integer() or size < smallest:
        unit = "HOG cells" if target == "hog" else "pixel regions"
        return f"{unit} would be {size:g} px (patch {arch.patch_size} / {scale:g}), not a whole {smallest} px or more"
    return None


def resolve_scales(arch: Arch, target: str, scales: Sequence[float] | None = None) -> list[float]:
    """The scales to train, fine to coarse: ``scales`` checked, or the paper's that fit the arch and target."""
    fitting = [s for s in PAPER_SCALES if scale_problem(arch, target, s) is None]
    fix = (f"use --localmim-scales {','.join(f'{s:g}' for s in fitting)}" if fitting
           else "use --target pixel or an arch with a larger patch")
    if scales is None:
        if not fitting:
            raise MimzooError(f"no LocalMIM scale fits {arch.name} with --target {target}; {fix}")
        return fitting
    if not 1 <= len(scales) <= len(PAPER_SCALES) or len(set(scales)) != len(scales):
        raise MimzooError(f"--localmim-scales takes 1 to {len(PAPER_SCALES)} different scales; {fix}")
    for scale in scales:
        if problem := scale_problem(arch, target, scale):
            raise MimzooError(f"--localmim-scales {scale:g} does not fit {arch.name} with --target {target}: "
                              f"{problem}; {fix}")
    return sorted(scales, reverse=True)


def tap_blocks(depth: int, num_scales: int) -> list[int]:
    """0-based blocks read by ``num_scales`` scales (fine to coarse): the last ones of [1, 3, depth-3, depth-1]."""
    return [1, 3, depth - 3, depth - 1][-num_scales:]


def scale_head(scale: float, dim: int, out_dim: int) -> nn.Sequential:
    """(B, dim, g, g) -> (B, out_dim, g*s, g*s): 2x2 transposed convs (halving the width, channel LN + GELU
    between) per doubling, or average pooling for s < 1, then a 1x1 conv to the target dim."""
    steps = round(math.log2(scale))
    layers: list[nn.Module] = [nn.AvgPool2d(2**-steps)] if steps < 0 else []
    for i in range(steps):
        if i:
            layers += [LayerNorm2d(dim), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
        dim //= 2
    return nn.Sequential(*layers, nn.Conv2d(dim, out_dim, kernel_size=1))


def scale_mask(mask: torch.Tensor, grid: int, scale: float) -> torch.Tensor:
    """(B, N) patch mask, 1 = masked -> (B, (grid*s)^2) loss weights: each patch's bit repeated over its sub-cells
    for s >= 1; for s < 1 the fraction of masked patches in each region (partly visible regions still count)."""
    m = mask.view(-1, 1, grid, grid)
    m = F.interpolate(m, scale_factor=scale, mode="nearest") if scale >= 1 else F.avg_pool2d(m, round(1 / scale))
    return m.flatten(1)


class LocalMIM(Pretrainer):
    def __init__(self, arch: Arch, scales: Sequence[float] | None = None, target: str = "hog",
                 mask_ratio: float = 0.75, norm_pix_loss: bool = True, lowpass_radius: float | None = None,
                 hog_bins: int = HOG_BINS, hog_bias: bool = False, mask_unit: int = 1,
                 degradation: str | None = None) -> None:
        super().__init__()
        self.arch, self.mask_ratio, self.norm_pix_loss, self.hog_bins = arch, mask_ratio, norm_pix_loss, hog_bins
        self.mask_unit = mask_unit
        self.degradation = None if degradation is None else Degradation(degradation, arch)
        self.hog = target == "hog"
        self.image_filter = None if self.hog else image_filter(target, arch.img_size, lowpass_radius)
        self.scales = resolve_scales(arch, target, scales)
        self.regions = [round(arch.patch_size / s) for s in self.scales]  # HOG cell or pixel region side, px
        self.encoder = create_encoder(arch)
        self.taps = tap_blocks(len(self.encoder.blocks), len(self.scales))
        width, prefix = self.encoder.embed_dim, self.encoder.num_prefix_tokens
        # the deepest tap is the last block, normed by the encoder's own final norm (trained, exported)
        self.tap_norms = nn.ModuleList(nn.LayerNorm(width, eps=1e-6) for _ in self.taps[:-1])
        self.decoders = nn.ModuleList(
            MaskedDecoder(width, arch.num_patches, None, DECODER_DIM, DECODER_DEPTH, DECODER_HEADS,
                          num_prefix_tokens=prefix)
            for _ in self.scales
        )
        out_dims = [3 * hog_bins if self.hog else r * r * 3 for r in self.regions]
        self.heads = nn.ModuleList(scale_head(s, DECODER_DIM, d) for s, d in zip(self.scales, out_dims, strict=True))
        # the reference's --hog_bias: each scale's frozen Sobel conv keeps its random default bias (a buffer here,
        # so checkpoints and exports carry it)
        bias = torch.empty(len(self.scales), 2).uniform_(-HOG_BIAS_BOUND, HOG_BIAS_BOUND) if hog_bias else None
        self.register_buffer("hog_bias", bias)  # (scales, 2), or None: not in the state dict

    @torch.no_grad()
    def targets(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> per scale (B, (g*s)^2, K_s): HOG of each cell, or each (filtered) region's pixels,
        per-region normalised when norm_pix_loss."""
        if self.hog:
            return hog_features(images, self.regions, self.hog_bins, self.hog_bias)
        if self.image_filter is not None:
            images = self.image_filter(images)
        regions = [patchify(images, r) for r in self.regions]
        return [norm_pix(x) for x in regions] if self.norm_pix_loss else regions

    def predict(self, images: torch.Tensor, mask: TokenMask) -> list[torch.Tensor]:
        """(B, 3, H, W) and a patch mask -> per scale (B, (g*s)^2, K_s), cells row-major like the targets."""
        encoded = encode_visible(self.encoder, images, mask.idx_keep, taps=self.taps[:-1])
        features = [norm(x) for norm, x in zip(self.tap_norms, encoded.taps, strict=True)] + [encoded.tokens]
        grid, preds = self.arch.grid_size, []
        for x, decoder, head in zip(features, self.decoders, self.heads, strict=True):
            x = decoder(x, mask.idx_restore)  # (B, N, DECODER_DIM), image order
            x = head(x.transpose(1, 2).unflatten(2, (grid, grid)))  # (B, K_s, g*s, g*s)
            preds.append(x.flatten(2).transpose(1, 2))
        return preds

    def forward(self, images: torch.Tensor) -> MethodOutput:
        degraded = self.degrade(images)
        mask = self.draw_mask(images.shape[0], images.device)
        preds, targets = self.predict(degraded.images, mask), self.targets(degraded.clean)
        masks = [scale_mask(mask.mask, self.arch.grid_size, s) for s in self.scales]
        losses = torch.stack([masked_mse(*args) for args in zip(preds, targets, masks, strict=True)])
        k = self.reported_scale
        return MethodOutput(losses.sum(), preds[k], targets[k], masks[k], logs={"scale_losses": losses.detach()})

    @property
    def reported_scale(self) -> int:
        """Index of the scale the trainer and the reconstruction figure get: the patch scale (x1), or the deepest
        where x1 is not trained."""
        return self.scales.index(1.0) if 1.0 in self.scales else -1

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> Reconstruction:
        """(B, 3, S, S) -> every scale's prediction as a panel: HOG as orientation pictures beside the target's, or
        pixel regions as images (the reported scale's also as the standard reconstruction)."""
        degraded = self.degrade(images)  # then the mask, as forward draws them
        mask = self.draw_mask(images.shape[0], images.device)
        preds, p = self.predict(degraded.images, mask), self.arch.patch_size
        names = [f"x{s:g}" for s in self.scales]
        if self.hog:
            panels = {}
            for name, pred, target in zip(names, preds, self.targets(images), strict=True):
                panels |= {f"{name} HOG predicted": hog_picture(pred, self.hog_bins),
                           f"{name} HOG target": hog_picture(target, self.hog_bins)}
            return Reconstruction(to_rgb(images), hide_masked(degraded.images, mask.mask, p), None, None,
                                  degraded_panel(degraded, panels), [HOG_NOTE])
        target_image, panels = pixel_target(images, self.image_filter)
        denormalise = denorm_pix if self.norm_pix_loss else None
        predicted = [predicted_image(x, target_image, r, denormalise) for x, r in zip(preds, self.regions, strict=True)]
        for name, region, image in zip(names, self.regions, predicted, strict=True):
            panels[f"{name} ({region} px regions)"] = to_rgb(image)
        return from_prediction(images, degraded.images, predicted[self.reported_scale], mask.mask, p,
                               degraded_panel(degraded, panels), self.norm_pix_loss)
