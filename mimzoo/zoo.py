"""The zoo: named backbones, usable anywhere a backbone spec is (``mimzoo list``).

Each entry names a Hub repo in timm's layout: ``mimzoo pull NAME`` downloads it once, then every command loads it
by name, offline. Two kinds of entries:

- releases of the papers' authors (timm's copies of MAE's encoders);
- mimzoo's own (``recipe`` is set): ``mimzoo zoo build NAME`` pretrains, exports, evaluates and writes the card of
  each (``mimzoo.engine.zoo_build``); their measured numbers ship in ``zoo_results.json`` beside this file, each with
  the command and metrics files that made it. Their repos are not published yet (no Hub is reachable from the
  machines that built them); ``mimzoo push`` publishes an entry's export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_FILE = Path(__file__).with_name("zoo_results.json")

# CIFAR-10 at 32 px with patch 4 (64 tokens), as the official-code anchor of performance.md, and MAE's CIFAR recipe
# there: 100 epochs, batch 512, blr 1.5e-4, 10 warm-up epochs. Every CIFAR entry gets this same budget.
CIFAR_RECIPE: dict[str, Any] = {"arch": "vit_tiny_patch4_32", "epochs": 100, "warmup_epochs": 10,
                                "batch_size": 512, "blr": 1.5e-4}
CIFAR_EVALS = ("knn", "linprobe", "linprobe_adamw", "finetune")


@dataclass(frozen=True)
class ZooEntry:
    """recipe: ``mimzoo pretrain`` options of a mimzoo-built entry (None for others' releases); seeds: the
    pretraining seeds it is built with (results are their mean and spread); evals: downstream tasks it reports."""

    name: str
    method: str
    arch: str
    data: str
    epochs: int
    repo_id: str
    description: str
    recipe: dict[str, Any] | None = None
    seeds: tuple[int, ...] = (0,)
    evals: tuple[str, ...] = ()


def _cifar(name: str, method: str, description: str, seeds: tuple[int, ...] = (0,), **options: Any) -> ZooEntry:
    recipe = {**CIFAR_RECIPE, "method": method, **options}
    return ZooEntry(name, method, recipe["arch"], "cifar10", recipe["epochs"], f"mimzoo/{name}", description,
                    recipe, seeds, CIFAR_EVALS)


_ENTRIES = (
    # the MAE paper's released encoders (facebookresearch/mae), as timm publishes them
    ZooEntry("mae-vit-base-in1k", "mae", "vit_base_patch16_224", "imagenet-1k", 1600,
             "timm/vit_base_patch16_224.mae", "MAE paper release, ViT-B/16 encoder"),
    ZooEntry("mae-vit-large-in1k", "mae", "vit_large_patch16_224", "imagenet-1k", 1600,
             "timm/vit_large_patch16_224.mae", "MAE paper release, ViT-L/16 encoder"),
    ZooEntry("mae-vit-huge-in1k", "mae", "vit_huge_patch14_224", "imagenet-1k", 1600,
             "timm/vit_huge_patch14_224.mae", "MAE paper release, ViT-H/14 encoder"),
    # mimzoo's CIFAR-10 entries: one method each at the same budget (MAE and the best other get 3 seeds)
    _cifar("mae-vit-tiny-p4-cifar10", "mae", "MAE, ViT-T/4, CIFAR-10", seeds=(0, 1, 2)),
    _cifar("pixmim-vit-tiny-p4-cifar10", "pixmim", "PixMIM (low-pass target + SRC crop), ViT-T/4, CIFAR-10"),
    _cifar("mff-vit-tiny-p4-cifar10", "mff", "MFF (multi-level fusion), ViT-T/4, CIFAR-10"),
    _cifar("pixmim-mff-vit-tiny-p4-cifar10", "mff", "MFF on PixMIM (fusion + low-pass target), ViT-T/4, CIFAR-10",
           target="lowpass"),
    _cifar("localmim-vit-tiny-p4-cifar10", "localmim", "LocalMIM with pixel targets, ViT-T/4, CIFAR-10",
           target="pixel", blr=2e-4, min_lr=1e-6),
    _cifar("misalign-vit-tiny-p4-cifar10", "misalign", "Beyond Masking (zoom-in), ViT-T/4, CIFAR-10",
           degradation="zoom-in", min_lr=1e-5),
    # CamVid: MAE on its 367 training frames, then DPT segmentation against the same DPT from scratch
    ZooEntry("mae-vit-tiny-p16-camvid", "mae", "vit_tiny_patch16_224", "camvid", 400,
             "mimzoo/mae-vit-tiny-p16-camvid", "MAE, ViT-T/16, CamVid train frames; DPT segmentation",
             {"method": "mae", "arch": "vit_tiny_patch16_224", "epochs": 400, "warmup_epochs": 40,
              "batch_size": 64, "blr": 1.5e-4}, (0,), ("segment",)),
)
ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}


def measured(name: str) -> dict[str, Any] | None:
    """The shipped headline numbers of a mimzoo-built entry (``zoo_results.json``), or None before it is built."""
    if not RESULTS_FILE.is_file():
        return None
    return json.loads(RESULTS_FILE.read_text()).get("entries", {}).get(name)
