"""The method registry: each method's builder, default data view and paper, in one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mimzoo.archs import Arch
from mimzoo.errors import MimzooError
from mimzoo.methods.base import MethodOutput, Pretrainer
from mimzoo.methods.mae import MAE

if TYPE_CHECKING:
    from mimzoo.engine.config import PretrainConfig


@dataclass(frozen=True)
class MethodSpec:
    """build: (arch, config) -> model; crop: the default data view (``--crop`` overrides);
    paper: arXiv id recorded in exports and cards."""

    build: Callable[[Arch, PretrainConfig], Pretrainer]
    crop: str
    paper: str


METHODS: dict[str, MethodSpec] = {
    "mae": MethodSpec(
        lambda arch, cfg: MAE(arch, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss),
        crop="rrc", paper="arXiv:2111.06377",
    ),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise MimzooError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "MethodOutput", "MethodSpec", "Pretrainer", "get_method"]
