"""The zoo: named backbones on the Hugging Face Hub, usable anywhere a backbone spec is (``mimzoo list``).

Each entry names a Hub repo in timm's layout: ``mimzoo pull NAME`` downloads it once, then every command loads it
by name, offline. Entries are added as weights are published (``mimzoo export`` + ``mimzoo push``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    name: str
    method: str
    arch: str
    data: str
    epochs: int
    repo_id: str
    description: str


_ENTRIES = (
    # the MAE paper's released encoders (facebookresearch/mae), as timm publishes them
    ZooEntry("mae-vit-base-in1k", "mae", "vit_base_patch16_224", "imagenet-1k", 1600,
             "timm/vit_base_patch16_224.mae", "MAE paper release, ViT-B/16 encoder"),
    ZooEntry("mae-vit-large-in1k", "mae", "vit_large_patch16_224", "imagenet-1k", 1600,
             "timm/vit_large_patch16_224.mae", "MAE paper release, ViT-L/16 encoder"),
    ZooEntry("mae-vit-huge-in1k", "mae", "vit_huge_patch14_224", "imagenet-1k", 1600,
             "timm/vit_huge_patch14_224.mae", "MAE paper release, ViT-H/14 encoder"),
)
ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}
