"""The method registry: each method's builder, default data view and paper, in one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mimzoo.archs import Arch, get_arch
from mimzoo.degradations import MASK_RATIOS, check_degradation, view_size_for
from mimzoo.errors import MimzooError
from mimzoo.methods.base import MethodOutput, Pretrainer, Reconstruction
from mimzoo.methods.localmim import TARGETS as LOCALMIM_TARGETS
from mimzoo.methods.localmim import LocalMIM, resolve_scales
from mimzoo.methods.mae import MAE
from mimzoo.methods.mff import MFF, encoder_depth, resolve_layers
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
WARMUP_FROM_ZERO = ("The warm-up starts from lr 0; OpenMMLab's LinearLR starts from 1e-4 x lr (1e-9 x lr in the "
                    "800-epoch PixMIM config).")


def _image_size(arch: Arch, cfg: PretrainConfig) -> int:
    return arch.img_size


@dataclass(frozen=True)
class MethodSpec:
    """build: (arch, config with defaults resolved) -> model; crop / target: the method's default data view
    (``--crop``) and reconstruction target (``--target``); paper: arXiv id recorded in exports and cards;
    degradation: the default ``--degradation`` (None: the method takes none); view_size: (arch, resolved
    config) -> side of the data view in px, when the model takes views larger than the encoder's input;
    targets: the ``--target`` values it accepts; resolve: fills method options whose default depends on the arch
    or target into the config (after crop and target; MAE's mask ratio 0.75 fills in after it); blr, min_lr and
    no_weight_decay: the reference recipe's base lr, final lr and name patterns kept out of weight decay (besides
    1-D parameters and biases, which never take it); deviations: what it trains differently from its reference
    code on purpose, as sentences for the model card (besides ``COMMON_DEVIATIONS``)."""

    build: Callable[[Arch, PretrainConfig], Pretrainer]
    crop: str
    paper: str
    target: str = "pixel"
    degradation: str | None = None
    view_size: Callable[[Arch, PretrainConfig], int] = _image_size
    targets: tuple[str, ...] = IMAGE_TARGETS
    resolve: Callable[[PretrainConfig], None] | None = None
    blr: float = MAE_BLR
    min_lr: float = 0.0
    no_weight_decay: tuple[str, ...] = ()
    deviations: tuple[str, ...] = ()


def _mae_options(arch: Arch, cfg: PretrainConfig) -> dict[str, Any]:
    """MAE's options from the config; the MAE-based pixel methods (MAE, PixMIM, MFF) all take them."""
    return dict(mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss,
                image_filter=image_filter(cfg.target, arch.img_size, cfg.lowpass_radius))


def _mae(arch: Arch, cfg: PretrainConfig) -> MAE:
    return MAE(arch, **_mae_options(arch, cfg))


def _mff(arch: Arch, cfg: PretrainConfig) -> MFF:
    return MFF(arch, layers=cfg.mff_layers, **_mae_options(arch, cfg))


def _mff_layers(cfg: PretrainConfig) -> None:
    cfg.mff_layers = resolve_layers(cfg.mff_layers, encoder_depth(get_arch(cfg.arch)))


def _misalign(arch: Arch, cfg: PretrainConfig) -> Misalign:
    return Misalign(arch, cfg.degradation, **_mae_options(arch, cfg))


def _degradation_mask_ratio(cfg: PretrainConfig) -> None:
    if cfg.mask_ratio is None:
        cfg.mask_ratio = MASK_RATIOS[check_degradation(cfg.degradation)]


def _localmim(arch: Arch, cfg: PretrainConfig) -> LocalMIM:
    return LocalMIM(arch, cfg.localmim_scales, cfg.target, mask_ratio=cfg.mask_ratio,
                    norm_pix_loss=cfg.norm_pix_loss, lowpass_radius=cfg.lowpass_radius,
                    hog_bins=HOG_BINS if cfg.hog_bins is None else cfg.hog_bins, hog_bias=cfg.hog_bias)


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
)

METHODS: dict[str, MethodSpec] = {
    "mae": MethodSpec(_mae, crop="rrc", paper="arXiv:2111.06377"),
    # PixMIM = MAE + low-pass target + simple resized crop; --target / --crop ablate each part
    "pixmim": MethodSpec(_mae, crop="src", paper="arXiv:2303.02416", target="lowpass",
                         no_weight_decay=TOKENS_AND_POSITIONS, deviations=(WARMUP_FROM_ZERO,)),
    # MFF = MAE whose decoder reads a fusion of several encoder levels; it uses PixMIM's crop, not its target
    "mff": MethodSpec(_mff, crop="src", paper="arXiv:2308.00261", resolve=_mff_layers,
                      no_weight_decay=TOKENS_AND_POSITIONS, deviations=(WARMUP_FROM_ZERO,)),
    # Beyond Masking = MAE's masking + an input degradation; zoom-in (a ~9/7 larger view) is the paper's best
    "misalign": MethodSpec(_misalign, crop="rrc", paper="arXiv:2203.14313", degradation="zoom-in",
                           view_size=lambda arch, cfg: view_size_for(cfg.degradation, arch.img_size),
                           resolve=_degradation_mask_ratio, min_lr=1e-5, no_weight_decay=TOKENS_AND_POSITIONS,
                           deviations=MISALIGN_DEVIATIONS),
    # LocalMIM = MAE's masking, with 4 encoder taps each decoded at its own scale (HOG or norm-pix regions)
    "localmim": MethodSpec(_localmim, crop="rrc", paper="arXiv:2303.05251", target="hog",
                           targets=LOCALMIM_TARGETS, resolve=_localmim_options, blr=2e-4, min_lr=1e-6,
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
    if spec.resolve is not None:
        spec.resolve(cfg)
    if cfg.mask_ratio is None:
        cfg.mask_ratio = MAE_MASK_RATIO
    return cfg


def deviations(method: str) -> list[str]:
    """What ``method`` trains differently from its reference code on purpose: the common list, then its own."""
    return [*COMMON_DEVIATIONS, *get_method(method).deviations]


__all__ = ["METHODS", "MethodOutput", "MethodSpec", "Pretrainer", "Reconstruction", "deviations", "get_method",
           "resolve_defaults"]
