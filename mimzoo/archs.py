"""Architecture names: a timm registry ViT plus the model args that reshape it.

An arch is named like timm's ViTs, ``vit_{size}_patch{p}_{img}``. Names that timm registers
(``vit_base_patch16_224``) build that model as is; other patch/image sizes (``vit_tiny_patch4_32``)
build the same-size timm model with ``img_size``/``patch_size`` model args, which the export records so
plain timm rebuilds the same shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mimzoo.errors import MimzooError

# size -> (timm registry name at 224 px, MAE decoder width, depth, heads)
# B/L/H use MAE's 512 x 8 decoder. Tiny and small get the lighter decoders used for small ViTs
# (the official-code CIFAR anchor in ../shared/docs/performance.md uses 128 x 4 for ViT-T).
_SIZES: dict[str, tuple[str, int, int, int]] = {
    "tiny": ("vit_tiny_patch16_224", 128, 4, 4),
    "small": ("vit_small_patch16_224", 256, 4, 8),
    "base": ("vit_base_patch16_224", 512, 8, 16),
    "large": ("vit_large_patch16_224", 512, 8, 16),
    "huge": ("vit_huge_patch14_224", 512, 8, 16),
}
_NAME = re.compile(r"^vit_(tiny|small|base|large|huge)_patch(\d+)_(\d+)$")

EXAMPLES = (
    "vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224, vit_large_patch16_224, "
    "vit_huge_patch14_224, vit_tiny_patch4_32, vit_tiny_patch2_32, vit_small_patch4_32"
)


@dataclass(frozen=True)
class Arch:
    """A ViT shape: the timm model to build and the decoder MAE-style methods pair with it."""

    name: str
    timm_name: str
    img_size: int
    patch_size: int
    model_args: dict = field(default_factory=dict)
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


def get_arch(name: str) -> Arch:
    """Parse an arch name; raise a one-line error for unknown names or a grid that does not divide."""
    match = _NAME.match(name)
    if match is None:
        raise MimzooError(f"unknown arch {name!r}; use a name like {EXAMPLES}")
    size, patch, img = match.group(1), int(match.group(2)), int(match.group(3))
    if patch < 1 or img < patch or img % patch:
        fixed = max(patch, 1)
        raise MimzooError(
            f"arch {name!r}: image size {img} is not a positive multiple of patch size {patch}; pick one that is "
            f"(e.g. vit_{size}_patch{fixed}_{max(fixed, img - img % fixed)})"
        )
    timm_name, dec_dim, dec_depth, dec_heads = _SIZES[size]
    default_patch = 14 if size == "huge" else 16
    model_args = {}
    if img != 224:
        model_args["img_size"] = img
    if patch != default_patch:
        model_args["patch_size"] = patch
    return Arch(name, timm_name, img, patch, model_args, dec_dim, dec_depth, dec_heads)


# timm's ViT widths: how foreign weights (an import, an --init-from file) are matched to an arch name
_WIDTHS = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge"}


def arch_for(width: int, patch_size: int, img_size: int) -> str | None:
    """The arch name of a ViT with this embedding width, patch and image size, or None for a width timm's
    tiny/small/base/large/huge ViTs do not have."""
    size = _WIDTHS.get(width)
    return f"vit_{size}_patch{patch_size}_{img_size}" if size else None
