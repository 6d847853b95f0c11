"""The method registry: each method's builder, default data view and paper, in one table."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from mimzoo.archs import Arch, get_arch
from mimzoo.degradations import DEGRADATIONS, GEOMETRIC, MASK_RATIOS, check_degradation, view_size_for
from mimzoo.engine.defaults import RECIPE_WARMUP_EPOCHS
from mimzoo.errors import MimzooError
from mimzoo.fusion import encoder_depth, resolve_layers
from mimzoo.methods.base import MethodOutput, Pretrainer, Reconstruction
from mimzoo.methods.localmim import TARGETS as LOCALMIM_TARGETS
from mimzoo.methods.localmim import LocalMIM, resolve_scales
from mimzoo.methods.mae import MAE
from mimzoo.methods.misalign import Misalign
from mimzoo.targets import HOG_BINS, IMAGE_TARGETS, image_filter

if TYPE_CHECKING:
    from mimzoo.engine.config import PretrainConfig


MAE_MASK_RATIO = 0.75
MAE_BLR = 1.5e-4  # MAE's PRETRAIN.md, and the OpenMMLab configs' 1.5e-4 x 4096 / 256
# OpenMMLab's paramwise_cfg (PixMIM, MFF) and Beyond Masking's no_weight_decay(): tokens and positions take no decay.
# Official MAE and LocalMIM pass no such list: only 1-D parameters and biases are excluded there.
TOKENS_AND_POSITIONS = ("*pos_embed", "*cls_token", "*mask_token")

# What mimzoo trains differently from the reference code on purpose (docs/parity.md compares file by file): exports
# record these lists and their model cards show them. Every method's, then each method's own (MethodSpec).
COMMON_DEVIATIONS = (
    "Mixed precision is bf16 autocast on CUDA without loss scaling; the references train with fp16 autocast and a "
    "dynamic loss scaler.",
    "The rrc view crops and resizes in one PIL call, so the bicubic filter may read pixels just outside the crop "
    "box; torchvision's RandomResizedCrop crops first.",
)
OPENMMLAB_DEVIATIONS = (  # PixMIM's (mmselfsup) and MFF's (mmpretrain) reference code
    "The warm-up starts from lr 0; OpenMMLab's LinearLR starts from 1e-4 x lr (1e-9 x lr in the 800-epoch PixMIM "
    "config).",
    "The fixed 2-D sin-cos position tables are MAE's (a patch's column in the first half of each vector); "
    "OpenMMLab's build_2d_sincos_position_embedding puts its row first: the same vectors on the transposed grid.",
)


# what every method but misalign may degrade its input with: what keeps the view's geometry
SAME_GEOMETRY = tuple(name for name in DEGRADATIONS if name not in GEOMETRIC)


@dataclass(frozen=True)
class MethodSpec:
    """A named method as a preset of parts. build: (arch, config with defaults resolved) -> model; crop / target:
    the default data view (``--crop``) and reconstruction target (``--target``); paper: arXiv id recorded in exports
    and cards; host: the model the parts plug into, as the card names it; fusion: whether MFF's
    fusion feeds the decoder by default (``--fusion``; None: the method has no single decoder to feed);
    degradation: the default ``--degradation`` (None: none); degradations: those it takes; targets: the
    ``--target`` values it accepts; resolve: fills method options whose default depends on the arch or target into
    the config (after crop and target; MAE's mask ratio 0.75 fills in after it); blr, min_lr and no_weight_decay:
    the reference recipe's base lr, final lr and name patterns kept out of weight decay (besides 1-D parameters
    and biases, which never take it); short_warmup: (epochs, warm-up) where the reference warms up differently for
    runs of at most that many epochs (else ``RECIPE_WARMUP_EPOCHS``); deviations: what it trains differently from
    its reference code on purpose, as sentences for the model card (besides ``COMMON_DEVIATIONS``)."""

    build: Callable[[Arch, PretrainConfig], Pretrainer]
    crop: str
    paper: str
    host: str = "MAE"
    target: str = "pixel"
    fusion: bool | None = False
    degradation: str | None = None
    degradations: tuple[str, ...] = SAME_GEOMETRY
    targets: tuple[str, ...] = IMAGE_TARGETS
    resolve: Callable[[PretrainConfig], None] | None = None
    blr: float = MAE_BLR
    min_lr: float = 0.0
    no_weight_decay: tuple[str, ...] = ()
    short_warmup: tuple[int, float] | None = None
    deviations: tuple[str, ...] = ()

    def warmup_epochs(self, epochs: int) -> float:
        """The reference recipe's warm-up for a run of ``epochs`` (before the quarter-of-the-epochs cap)."""
        if self.short_warmup is not None and epochs <= self.short_warmup[0]:
            return self.short_warmup[1]
        return RECIPE_WARMUP_EPOCHS


def view_size(arch: Arch, cfg: PretrainConfig) -> int:
    """Side in px of the data view of the resolved ``cfg``: the encoder's input, or the larger (zoom-in) or smaller
    (zoom-out) view its degradation takes."""
    return view_size_for(cfg.degradation, arch.img_size)


def _pixel_method(cls: type[MAE], arch: Arch, cfg: PretrainConfig) -> MAE:
    """MAE or a subclass with the config's parts: target filter, fusion, mask unit and degradation."""
    return cls(arch, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss,
               image_filter=image_filter(cfg.target, arch.img_size, cfg.lowpass_radius),
               fusion=cfg.mff_layers if cfg.fusion else None, mask_unit=cfg.mask_unit, degradation=cfg.degradation)


def _degradation_mask_ratio(cfg: PretrainConfig) -> None:
    if cfg.mask_ratio is None:
        cfg.mask_ratio = MASK_RATIOS[check_degradation(cfg.degradation)]


def _localmim(arch: Arch, cfg: PretrainConfig) -> LocalMIM:
    return LocalMIM(arch, cfg.localmim_scales, cfg.target, mask_ratio=cfg.mask_ratio,
                    norm_pix_loss=cfg.norm_pix_loss, lowpass_radius=cfg.lowpass_radius,
                    hog_bins=HOG_BINS if cfg.hog_bins is None else cfg.hog_bins, hog_bias=cfg.hog_bias,
                    mask_unit=cfg.mask_unit, degradation=cfg.degradation)


def _localmim_options(cfg: PretrainConfig) -> None:
    cfg.localmim_scales = resolve_scales(get_arch(cfg.arch), cfg.target, cfg.localmim_scales)
    if cfg.target == "hog" and cfg.hog_bins is None:
        cfg.hog_bins = HOG_BINS


MISALIGN_DEVIATIONS = (
    "The encoder is a timm ViT with a cls token, 2-D sin-cos positions and MAE's xavier initialisation (the decoder "
    "too: a cls slot, 2-D positions, xavier), so the export is a plain timm ViT; the reference encodes and decodes "
    "without a cls token, with 1-D sin-cos positions and truncated-normal (std 0.02) initialisation.",
    "blur is a Gaussian of sigma = patch / 8 px on the encoder's input; the released blurred/ code (a random 1x1 "
    "conv to 7 channels) does not run.",
    "decolor's encoder sees the view with its HSV saturation x 0.3 and predicts the clean view, from the rrc view; "
    "the released decolorized/ code feeds a random grey mix of the channels (1 channel) to predict the "
    "saturation-reduced image, from RandomResizedCrop(0.08-1, bilinear) without a flip.",
    "distort, blur and decolor take the loss on every token, as distorted/ does (blurred/'s masked-token loss does "
    "not run).",
    "zoom-out draws the canvas offset per sample; the released zoomed-out/ code draws one (left, top) per batch on "
    "each GPU, so what a sample sees there depends on the batch size and the number of processes.",
)

# The named methods are presets of parts; every part composes with the others (--target, --crop, --fusion,
# --mask-unit, --degradation) unless its spec says it cannot.
METHODS: dict[str, MethodSpec] = {
    "mae": MethodSpec(partial(_pixel_method, MAE), crop="rrc", paper="arXiv:2111.06377"),
    # PixMIM = MAE + low-pass target + simple resized crop
    "pixmim": MethodSpec(partial(_pixel_method, MAE), crop="src", paper="arXiv:2303.02416",
                         target="lowpass", no_weight_decay=TOKENS_AND_POSITIONS, deviations=OPENMMLAB_DEVIATIONS),
    # MFF = MAE + fusion of several encoder levels for the decoder + PixMIM's crop (not its target)
    "mff": MethodSpec(partial(_pixel_method, MAE), crop="src", paper="arXiv:2308.00261", fusion=True,
                      no_weight_decay=TOKENS_AND_POSITIONS, deviations=OPENMMLAB_DEVIATIONS),
    # Beyond Masking = MAE + an input degradation (zoom-in, a ~9/7 larger view, is the paper's best) + its decoder
    # and loss, which also take the degradations that change the view's geometry
    "misalign": MethodSpec(partial(_pixel_method, Misalign), host="MAE with Beyond Masking's decoder and loss",
                           crop="rrc", paper="arXiv:2203.14313", degradation="zoom-in",
                           degradations=tuple(DEGRADATIONS), resolve=_degradation_mask_ratio, min_lr=1e-5,
                           no_weight_decay=TOKENS_AND_POSITIONS, deviations=MISALIGN_DEVIATIONS),
    # LocalMIM = MAE's masking, with 4 encoder taps each decoded at its own scale (HOG or norm-pix regions)
    "localmim": MethodSpec(_localmim, host="LocalMIM's multi-scale decoders", crop="rrc", paper="arXiv:2303.05251",
                           target="hog", fusion=None, targets=LOCALMIM_TARGETS, resolve=_localmim_options,
                           blr=2e-4, min_lr=1e-6, short_warmup=(100, 10),
                           deviations=("A HOG cell with no gradient at all (exactly flat) is 0; the reference's conv "
                                       "leaves rounding noise there, which its L2 normalisation scales to unit "
                                       "norm.",)),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise MimzooError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def resolve_defaults(cfg: PretrainConfig) -> PretrainConfig:
    """Fill the method's default crop, target, degradation, mask ratio, recipe (blr, min_lr, no-weight-decay
    patterns) and arch-dependent options (``spec.resolve``) into the config, so the saved config says what ran.
    Only unset (None) options are filled: a value the user gave, or a resumed run's, stays."""
    spec = get_method(cfg.method)
    cfg.blr = spec.blr if cfg.blr is None else cfg.blr
    cfg.min_lr = spec.min_lr if cfg.min_lr is None else cfg.min_lr
    if cfg.no_weight_decay is None:
        cfg.no_weight_decay = list(spec.no_weight_decay)
    cfg.crop = cfg.crop or spec.crop
    cfg.target = cfg.target or spec.target
    if cfg.target not in spec.targets:
        raise MimzooError(f"--method {cfg.method} does not take --target {cfg.target}; choose one of: "
                          f"{', '.join(spec.targets)}")
    cfg.degradation = cfg.degradation or spec.degradation
    if cfg.degradation is not None and check_degradation(cfg.degradation) not in spec.degradations:
        raise MimzooError(f"--method {cfg.method} does not take --degradation {cfg.degradation}: it changes the "
                          "view's geometry (the decoder predicts more than the encoder sees), which only misalign's "
                          f"decoder and loss take; use --method misalign, or one of {', '.join(spec.degradations)}")
    _resolve_fusion(cfg, spec)
    if spec.resolve is not None:
        spec.resolve(cfg)
    if cfg.mask_ratio is None:
        cfg.mask_ratio = MAE_MASK_RATIO
    check_masking(cfg)
    return cfg


def _resolve_fusion(cfg: PretrainConfig, spec: MethodSpec) -> None:
    """``cfg.fusion`` from the method's default (``--mff-layers`` alone asks for it) and the fused blocks."""
    if cfg.fusion is None:
        cfg.fusion = bool(spec.fusion) or cfg.mff_layers is not None
    if not cfg.fusion:
        if cfg.mff_layers is not None:
            raise MimzooError("--mff-layers picks the blocks --fusion fuses; drop --no-fusion or --mff-layers")
        return
    if spec.fusion is None:
        raise MimzooError(f"--method {cfg.method} does not take --fusion (or --mff-layers): its decoders each read "
                          "their own encoder block, so there is no single decoder input to fuse levels into; use "
                          "mae, pixmim, mff or misalign")
    cfg.mff_layers = resolve_layers(cfg.mff_layers, encoder_depth(get_arch(cfg.arch)))


def check_masking(cfg: PretrainConfig) -> None:
    """A mask unit tiles the patch grid, and the mask ratio leaves at least one unit visible (its range is
    validate's)."""
    grid, unit = get_arch(cfg.arch).grid_size, cfg.mask_unit
    fits = [k for k in range(1, grid + 1) if grid % k == 0]
    if unit not in fits:
        raise MimzooError(f"--mask-unit {unit} does not tile the {grid}x{grid} patch grid of {cfg.arch}; use one of "
                          f"{', '.join(map(str, fits))}")
    units = (grid // unit) ** 2
    if 0 <= cfg.mask_ratio < 1 and int(units * (1 - cfg.mask_ratio)) == 0:  # outside: validate's message
        if unit > 1:
            raise MimzooError(f"--mask-unit {unit} leaves {units} mask unit(s) on the {grid}x{grid} patch grid, none "
                              f"visible at --mask-ratio {cfg.mask_ratio:g}; use a smaller --mask-unit or --mask-ratio")
        most = math.floor((1 - 1 / units) * 1000) / 1000  # keeps one patch, rounded down to 3 decimals
        raise MimzooError(f"--mask-ratio {cfg.mask_ratio:g} leaves none of the {units} patches of {cfg.arch} visible; "
                          f"use at most {most:g}")


def parts(cfg: PretrainConfig) -> list[str]:
    """What the resolved ``cfg`` trains, as the parts of its method (the card and figures list them)."""
    spec = get_method(cfg.method)
    described = [spec.host, f"{cfg.target} target", f"{cfg.crop} crop"]
    if cfg.fusion:
        described.append(f"fusion of blocks {','.join(map(str, cfg.mff_layers))}")
    if cfg.mask_unit > 1:
        described.append(f"mask units of {cfg.mask_unit}x{cfg.mask_unit} patches")
    if cfg.degradation:
        described.append(f"{cfg.degradation} input")
    return described


def deviations(method: str) -> list[str]:
    """What ``method`` trains differently from its reference code on purpose: the common list, then its own."""
    return [*COMMON_DEVIATIONS, *get_method(method).deviations]


__all__ = ["METHODS", "MethodOutput", "MethodSpec", "Pretrainer", "Reconstruction", "deviations", "get_method",
           "parts", "resolve_defaults", "view_size"]
