"""The downstream commands end to end: resolve the backbone spec, open the labelled splits, run, record.

When the backbone is a local mimzoo export, the result is also added to its model card's model-index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from timm.data import create_transform
from timm.models.vision_transformer import VisionTransformer
from timm.utils import random_seed

from mimzoo.data.labeled import LabeledDataset, LabeledSplits, open_labeled
from mimzoo.data.limit import limit_labeled, limit_segmentation
from mimzoo.data.segmentation import SegData, open_segmentation
from mimzoo.engine import distributed as dist_utils
from mimzoo.engine.defaults import default_workers
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.features import POOLS, backbone_data_config, dataset_features
from mimzoo.engine.finetune import FinetuneConfig, finetune
from mimzoo.engine.knn import knn_predict, top1
from mimzoo.engine.linprobe import LinprobeConfig, linear_probe
from mimzoo.engine.outputs import RESULTS, replaceable, results_are_ours, writable_folder
from mimzoo.engine.report import Reporter, for_rank
from mimzoo.engine.segment import SegmentConfig, segment
from mimzoo.engine.supervised import save_results
from mimzoo.errors import MimzooError, check_settings, in_range, one_of, valid_seed
from mimzoo.hub.card import add_result
from mimzoo.hub.export import dataset_name
from mimzoo.hub.layout import read_record
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
    # with --val-fraction, measure the data's own evaluation split once at the end (off for runs that only choose
    # a recipe on the carve, so that they never see the test split)
    test: bool = True
    limit: int | None = None  # a trial on this many images of each split (a seeded subset, the same every time)


@dataclass
class KnnConfig:
    k: int = 20
    temperature: float = 0.07
    pool: str = "token"
    batch_size: int = 256
    workers: int = field(default_factory=default_workers)
    out: str = "runs/knn"

    def validate(self) -> None:
        check_settings([
            in_range("--k", self.k, 1),
            in_range("--temperature", self.temperature, 0, low_open=True),
            one_of("--pool", self.pool, POOLS),
            in_range("--batch-size", self.batch_size, 1),
            in_range("--workers", self.workers, 0),
        ])


def run_knn(inp: DownstreamInput, cfg: KnnConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Weighted kNN top-1 of frozen features: train split as the bank, the reported split (test where a validation
    carve leaves one, else val) as queries; kNN chooses nothing, so it has no use for the carve itself."""

    def body(backbone: VisionTransformer, splits: LabeledSplits, ctx: DistContext, rep: Reporter) -> dict[str, Any]:
        transform = create_transform(**backbone_data_config(backbone), is_training=False)

        def features(split):
            return dataset_features(backbone, LabeledDataset(split, transform), cfg.batch_size, cfg.workers,
                                    ctx.device, cfg.pool, rep)

        queries_split, name = splits.reported
        bank, bank_labels = features(splits.train)
        queries, labels = features(queries_split)
        accuracy = top1(knn_predict(bank, bank_labels, queries, len(splits.classes), cfg.k, cfg.temperature), labels)
        rep.message(f"kNN (k={cfg.k}, T={cfg.temperature}, {cfg.pool} pool): {name} top-1 {accuracy:.2f}")
        described = splits.describe()
        splits_used = {role: described[role] for role in ("train", "test" if splits.test is not None else "val")}
        results = {"top1": accuracy, "split": name, "splits": splits_used, "config": vars(cfg)}
        return save_results(Path(cfg.out), results, ctx)

    return _run(inp, "knn", _classification_data(inp), body, "top1", cfg.out, reporter, cfg.validate,
                metric_name=f"kNN top-1 (k={cfg.k}, T={cfg.temperature:g})")


def run_linprobe(inp: DownstreamInput, cfg: LinprobeConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """The card keeps the AdamW protocol's number apart from MAE's (LARS or SGD): they measure different things."""
    task = "linprobe_adamw" if cfg.optimizer == "adamw" else "linprobe"
    return _run(inp, task, _classification_data(inp), lambda b, s, ctx, rep: linear_probe(b, s, cfg, ctx, rep),
                "top1", cfg.out, reporter, cfg.validate)


def run_finetune(inp: DownstreamInput, cfg: FinetuneConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    return _run(inp, "finetune", _classification_data(inp), lambda b, s, ctx, rep: finetune(b, s, cfg, ctx, rep),
                "top1", cfg.out, reporter, cfg.validate)


def run_segment(inp: DownstreamInput, cfg: SegmentConfig, eval_split: str = "val",
                reporter: Reporter | None = None) -> dict[str, Any]:
    """DPT segmentation; the card records the last epoch's class-mean IoU on the evaluation split."""
    def open_data() -> SegData:
        return limit_segmentation(open_segmentation(inp.data, eval_split), inp.limit, inp.seed)

    return _run(inp, "segment", open_data,
                lambda b, d, ctx, rep: segment(b, d, cfg, ctx, rep, inp.backbone, dataset_name(inp.data)), "miou",
                cfg.out, reporter, cfg.validate)


def _classification_data(inp: DownstreamInput) -> Callable[[], LabeledSplits]:
    def open_data() -> LabeledSplits:
        splits = limit_labeled(open_labeled(inp.data, inp.val_fraction, inp.seed), inp.limit, inp.seed)
        return splits if inp.test else replace(splits, test=None, test_name=None)

    return open_data


def measured(inp: DownstreamInput, info: BackboneInfo) -> dict[str, Any]:
    """What a result measured, for results.json: the backbone (as given and as resolved) and the data (its splits
    are in the results' ``splits``)."""
    return {"backbone": inp.backbone, "architecture": info.config.get("architecture"),
            "model_args": info.config.get("model_args", {}), "weights": str(info.weights) if info.weights else None,
            "revision": info.revision, "data": inp.data, "val_fraction": inp.val_fraction, "limit": inp.limit,
            "seed": inp.seed}


def _run(inp: DownstreamInput, task: str, open_data: Callable[[], Any],
         body: Callable[[VisionTransformer, Any, DistContext, Reporter], dict[str, Any]],
         headline: str, out: str, reporter: Reporter | None, validate: Callable[[], None],
         metric_name: str | None = None) -> dict[str, Any]:
    """Check the settings and OUT (writable, no foreign results.json), resolve, open, run under torchrun or alone,
    add what was measured to OUT/results.json, and record ``results[headline]`` (measured on ``results["split"]``)
    in the card of a local export (checked readable before the run)."""
    validate()
    check_settings([valid_seed(inp.seed)])
    replaceable(writable_folder(Path(out)) / RESULTS, results_are_ours)
    random_seed(inp.seed)  # torch (a random:ARCH backbone, heads, drop path), numpy (Mixup), Python (RandAugment)
    backbone, info = load_backbone(inp.backbone, inp.arch)
    notes, card = list(info.notes), info.export_dir if inp.record else None
    if card is not None:
        read_record(card)
        try:
            writable_folder(card)
        except MimzooError:  # a read-only export (shared, archived) is still a backbone
            notes.append(f"{card} cannot be written: the result is not recorded in its model card")
            card = None
    data = open_data()
    ctx = dist_utils.init_distributed(inp.device)
    try:
        random_seed(inp.seed)
        rep = for_rank(reporter, ctx.is_main)
        for note in notes:
            rep.message(f"note: {note}")
        results = save_results(Path(out), {"measured": measured(inp, info), **body(backbone, data, ctx, rep)}, ctx)
        if ctx.is_main and card is not None:
            add_result(card, task, dataset_name(inp.data), round(results[headline], 2), results["split"],
                       metric_name)
            rep.message(f"recorded the {task} {headline} ({results['split']} split) in the model card of {card}")
        return results
    finally:
        dist_utils.shutdown_distributed()
