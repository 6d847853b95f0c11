"""The downstream commands end to end: resolve the backbone spec, open the labelled splits, run, record.

When the backbone is a local mimzoo export, the result is also added to its model card's model-index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.data import create_transform
from timm.models.vision_transformer import VisionTransformer

from mimzoo.data.labeled import LabeledDataset, LabeledSplits, open_labeled
from mimzoo.data.limit import limit_labeled, limit_segmentation
from mimzoo.data.segmentation import SegData, open_segmentation
from mimzoo.engine import distributed as dist_utils
from mimzoo.engine.defaults import default_workers
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.features import backbone_data_config, dataset_features
from mimzoo.engine.finetune import FinetuneConfig, finetune
from mimzoo.engine.knn import knn_predict, top1
from mimzoo.engine.linprobe import LinprobeConfig, linear_probe
from mimzoo.engine.report import Reporter, for_rank
from mimzoo.engine.segment import SegmentConfig, segment
from mimzoo.engine.supervised import save_results
from mimzoo.hub.card import add_result
from mimzoo.hub.export import dataset_name
from mimzoo.hub.resolve import BackboneInfo, load_backbone


@dataclass
class DownstreamInput:
    """What every downstream command shares: the backbone spec, the data and where it runs."""

    backbone: str
    data: str = "builtin"
    val_fraction: float | None = None
    arch: str | None = None  # only for a bare .safetensors file without config.json
    device: str = "auto"
    seed: int = 0
    record: bool = True  # add the result to the card of a local export (off for runs that only choose a recipe)
    limit: int | None = None  # a trial on this many images of each split (a seeded subset, the same every time)


@dataclass
class KnnConfig:
    k: int = 20
    temperature: float = 0.07
    pool: str = "token"
    batch_size: int = 256
    workers: int = field(default_factory=default_workers)
    out: str = "runs/knn"


def run_knn(inp: DownstreamInput, cfg: KnnConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Weighted kNN top-1 of frozen features: train split as the bank, validation split as queries."""

    def body(backbone: VisionTransformer, splits: LabeledSplits, ctx: DistContext, rep: Reporter) -> dict[str, Any]:
        transform = create_transform(**backbone_data_config(backbone), is_training=False)

        def features(split):
            return dataset_features(backbone, LabeledDataset(split, transform), cfg.batch_size, cfg.workers,
                                    ctx.device, cfg.pool, rep)

        bank, bank_labels = features(splits.train)
        queries, labels = features(splits.val)
        accuracy = top1(knn_predict(bank, bank_labels, queries, len(splits.classes), cfg.k, cfg.temperature), labels)
        rep.message(f"kNN (k={cfg.k}, T={cfg.temperature}, {cfg.pool} pool): top-1 {accuracy:.2f}")
        results = {"top1": accuracy, "config": {**vars(cfg), "bank": len(splits.train), "queries": len(splits.val)}}
        return save_results(Path(cfg.out), results, ctx)

    return _run(inp, "knn", _classification_data(inp), body, ("accuracy", "top1"), cfg.out, reporter)


def run_linprobe(inp: DownstreamInput, cfg: LinprobeConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    return _run(inp, "linprobe", _classification_data(inp), lambda b, s, ctx, rep: linear_probe(b, s, cfg, ctx, rep),
                ("accuracy", "best_top1"), cfg.out, reporter)


def run_finetune(inp: DownstreamInput, cfg: FinetuneConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    return _run(inp, "finetune", _classification_data(inp), lambda b, s, ctx, rep: finetune(b, s, cfg, ctx, rep),
                ("accuracy", "best_top1"), cfg.out, reporter)


def run_segment(inp: DownstreamInput, cfg: SegmentConfig, eval_split: str = "val",
                reporter: Reporter | None = None) -> dict[str, Any]:
    """DPT segmentation; the card records the last epoch's class-mean IoU on the evaluation split."""
    def open_data() -> SegData:
        return limit_segmentation(open_segmentation(inp.data, eval_split), inp.limit, inp.seed)

    return _run(inp, "segment", open_data, lambda b, d, ctx, rep: segment(b, d, cfg, ctx, rep),
                ("mean_iou", "last_miou"), cfg.out, reporter)


def _classification_data(inp: DownstreamInput) -> Callable[[], LabeledSplits]:
    return lambda: limit_labeled(open_labeled(inp.data, inp.val_fraction, inp.seed), inp.limit, inp.seed)


def measured(inp: DownstreamInput, info: BackboneInfo, data: LabeledSplits | SegData) -> dict[str, Any]:
    """What a result measured, for results.json: the backbone (as given and as resolved), the data and its splits."""
    return {"backbone": inp.backbone, "architecture": info.config.get("architecture"),
            "model_args": info.config.get("model_args", {}), "weights": str(info.weights) if info.weights else None,
            "revision": info.revision, "data": inp.data, "train_split": "train", "eval_split": data.val_name,
            "val_fraction": inp.val_fraction, "train_images": len(data.train), "eval_images": len(data.val),
            "limit": inp.limit, "seed": inp.seed}


def _run(inp: DownstreamInput, task: str, open_data: Callable[[], Any],
         body: Callable[[VisionTransformer, Any, DistContext, Reporter], dict[str, Any]],
         headline: tuple[str, str], out: str, reporter: Reporter | None) -> dict[str, Any]:
    """Resolve, open, run under torchrun or alone, add what was measured to OUT/results.json, and record
    ``results[headline[1]]`` as metric ``headline[0]`` in the card of a local export."""
    backbone, info = load_backbone(inp.backbone, inp.arch)
    data = open_data()
    ctx = dist_utils.init_distributed(inp.device)
    try:
        torch.manual_seed(inp.seed)
        results = save_results(Path(out), {"measured": measured(inp, info, data),
                                           **body(backbone, data, ctx, for_rank(reporter, ctx.is_main))}, ctx)
        if ctx.is_main and inp.record and info.export_dir is not None:
            metric, key = headline
            add_result(info.export_dir, task, dataset_name(inp.data), metric, round(results[key], 2), data.val_name)
            (reporter or Reporter()).message(f"recorded the {task} {metric} in the model card of {info.export_dir}")
        return results
    finally:
        dist_utils.shutdown_distributed()
