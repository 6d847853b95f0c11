"""The method registry: name -> builder from (arch, config)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from mimzoo.archs import Arch
from mimzoo.errors import MimzooError
from mimzoo.methods.base import MethodOutput, Pretrainer
from mimzoo.methods.mae import MAE

if TYPE_CHECKING:
    from mimzoo.engine.config import PretrainConfig

METHODS: dict[str, Callable[[Arch, "PretrainConfig"], Pretrainer]] = {
    "mae": lambda arch, cfg: MAE(arch, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss),
}


def build_method(arch: Arch, cfg: "PretrainConfig") -> Pretrainer:
    if cfg.method not in METHODS:
        raise MimzooError(f"unknown method {cfg.method!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[cfg.method](arch, cfg)


__all__ = ["METHODS", "MethodOutput", "Pretrainer", "build_method"]
