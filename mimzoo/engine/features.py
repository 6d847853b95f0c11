"""Frozen-backbone features: one pass over a split, pooled per image."""

from __future__ import annotations

from typing import Any

import torch
from timm.data import resolve_data_config
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader

from mimzoo.data.labeled import LabeledDataset
from mimzoo.data.loader import SkipReportingLoader, worker_stops_quietly
from mimzoo.engine.report import Reported, Reporter, SilentReporter
from mimzoo.errors import MimzooError

POOLS = ("token", "avg")


def backbone_data_config(backbone: VisionTransformer) -> dict[str, Any]:
    """timm's preprocessing for the backbone (mean, std, crop, interpolation) at the size it was built for;
    a model built with another ``img_size`` than its registry entry still carries the registry's input size."""
    config = resolve_data_config(model=backbone)
    config["input_size"] = (3, *backbone.patch_embed.img_size)
    return config


def pool_tokens(backbone: VisionTransformer, tokens: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, P + N, D) tokens after the final norm -> (B, D): the cls token (MAE's linear-probe protocol) or
    the mean of the patch tokens."""
    if pool not in POOLS:
        raise MimzooError(f"unknown --pool {pool!r}; choose one of: {', '.join(POOLS)}")
    if pool == "token":
        if not backbone.num_prefix_tokens:
            raise MimzooError("--pool token needs a cls token and this backbone has none; use --pool avg")
        return tokens[:, 0]
    return tokens[:, backbone.num_prefix_tokens :].mean(dim=1)


def dataset_features(backbone: VisionTransformer, dataset: LabeledDataset, batch_size: int, workers: int,
                     device: torch.device, pool: str = "token",
                     reporter: Reporter | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`extract_features` over ``dataset`` in order, warning about the unreadable images it skipped."""
    reporter = reporter or SilentReporter()
    loader = DataLoader(dataset, batch_size, num_workers=workers, worker_init_fn=worker_stops_quietly)
    return extract_features(backbone, SkipReportingLoader(loader, dataset.source, reporter.message), device, pool,
                            reporter)


@torch.no_grad()
def extract_features(backbone: VisionTransformer, loader: DataLoader | SkipReportingLoader, device: torch.device,
                     pool: str = "token", reporter: Reporter | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float32, labels (N,)) on ``device``, in loader order; progress per batch."""
    backbone.eval().to(device)
    features, labels = [], []
    with Reported(loader, reporter or SilentReporter(), "features") as batches:
        for images, targets in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                tokens = backbone.forward_features(images.to(device, non_blocking=True))
            features.append(pool_tokens(backbone, tokens, pool).float())
            labels.append(targets.to(device))
    return torch.cat(features), torch.cat(labels)
