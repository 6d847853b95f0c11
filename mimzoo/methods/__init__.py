"""The method registry: each method's builder, default data view and paper, in one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mimzoo.archs import Arch
from mimzoo.errors import MimzooError
from mimzoo.methods.base import MethodOutput, Pretrainer
from mimzoo.methods.mae import MAE
from mimzoo.targets import image_filter

if TYPE_CHECKING:
    from mimzoo.engine.config import PretrainConfig


@dataclass(frozen=True)
class MethodSpec:
    """build: (arch, config with defaults resolved) -> model; crop / target: the method's default data view
    (``--crop``) and reconstruction target (``--target``); paper: arXiv id recorded in exports and cards."""

    build: Callable[[Arch, PretrainConfig], Pretrainer]
    crop: str
    paper: str
    target: str = "pixel"


def _mae(arch: Arch, cfg: PretrainConfig) -> MAE:
    return MAE(arch, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss,
               image_filter=image_filter(cfg.target, arch.img_size, cfg.lowpass_radius))


METHODS: dict[str, MethodSpec] = {
    "mae": MethodSpec(_mae, crop="rrc", paper="arXiv:2111.06377"),
    # PixMIM = MAE + low-pass target + simple resized crop; --target / --crop ablate each part
    "pixmim": MethodSpec(_mae, crop="src", paper="arXiv:2303.02416", target="lowpass"),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise MimzooError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def resolve_defaults(cfg: PretrainConfig) -> PretrainConfig:
    """Fill the method's default crop and target into the config, so the saved config says what ran."""
    spec = get_method(cfg.method)
    cfg.crop = cfg.crop or spec.crop
    cfg.target = cfg.target or spec.target
    return cfg


__all__ = ["METHODS", "MethodOutput", "MethodSpec", "Pretrainer", "get_method", "resolve_defaults"]
