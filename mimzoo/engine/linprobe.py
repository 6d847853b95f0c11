"""Linear probing: a frozen encoder, BatchNorm1d(affine=False) + Linear, trained with LARS (MAE's protocol), SGD, or
AdamW (the protocol of the official-code anchor in ../shared/data/README.md: standardised features, AdamW, 100
epochs; here the BatchNorm without affine is the standardisation, with batch statistics in training and running
ones at evaluation).

Two paths train the same head:
- cached: features of the centre view are extracted once and the head trains on them (seconds per epoch);
  the default (``--mode auto``) for training splits of up to ``CACHED_MAX_IMAGES`` images;
- augmented: every step encodes fresh RandomResizedCrop + flip views through the frozen encoder, as the
  MAE paper does; the default above that size, where augmentation matters and features would not fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from timm.data import create_transform
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from timm.optim import Lars
from torch import nn

from mimzoo.data.labeled import LabeledDataset, LabeledSplits
from mimzoo.engine.checkpoint import CHECKPOINT, load_checkpoint, resumable, save_checkpoint
from mimzoo.engine.config import MAX_LR
from mimzoo.engine.defaults import default_workers, resolve_warmup
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.features import POOLS, backbone_data_config, dataset_features, pool_tokens
from mimzoo.engine.report import Reporter
from mimzoo.engine.supervised import (
    CHECKPOINT_KEYS,
    LoopConfig,
    SupervisedLoop,
    make_scheduler,
    non_finite,
    write_results,
)
from mimzoo.errors import Interrupted, MimzooError, check_settings, in_range, in_range_if_set, one_of

CACHED_MAX_IMAGES = 100_000
MODES = ("auto", "cached", "augmented")
OPTIMIZERS = ("lars", "sgd", "adamw")
BLR = {"lars": 0.1, "sgd": 0.1, "adamw": 1e-3}  # each optimizer's default base lr


@dataclass
class LinprobeConfig:
    """Defaults follow MAE's linear probe (blr 0.1, LARS, 90 epochs, 10 warm-up, no weight decay)."""

    pool: str = "token"
    mode: str = "auto"  # auto | cached | augmented
    optimizer: str = "lars"  # lars | sgd | adamw
    epochs: int = 90
    warmup_epochs: float | None = None  # None = RECIPE_WARMUP, at most a quarter of the epochs
    batch_size: int = 256
    blr: float | None = None  # None = the optimizer's default (BLR)
    weight_decay: float = 0.0
    workers: int = field(default_factory=default_workers)
    out: str = "runs/linprobe"
    resume: bool = False
    RECIPE_WARMUP: ClassVar[int] = 10

    def validate(self) -> None:
        check_settings([
            one_of("--pool", self.pool, POOLS),
            one_of("--mode", self.mode, MODES),
            one_of("--optimizer", self.optimizer, OPTIMIZERS),
            in_range("--epochs", self.epochs, 1),
            in_range_if_set("--warmup-epochs", self.warmup_epochs, 0),
            # the head's BatchNorm normalises over the batch: one image has no statistics
            in_range("--batch-size", self.batch_size, 2),
            in_range_if_set("--blr", self.blr, 0, MAX_LR, low_open=True),
            in_range("--weight-decay", self.weight_decay, 0),
            in_range("--workers", self.workers, 0),
        ])


class ProbeHead(nn.Sequential):
    """BatchNorm1d without affine parameters, then Linear (weights trunc-normal, std 0.01)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes))
        trunc_normal_(self[1].weight, std=0.01)
        nn.init.zeros_(self[1].bias)


class FrozenProbe(nn.Module):
    """Frozen backbone + trainable head; the backbone stays in eval mode whatever ``train()`` says."""

    def __init__(self, backbone: VisionTransformer, head: ProbeHead, pool: str) -> None:
        super().__init__()
        self.backbone, self.head, self.pool = backbone.requires_grad_(False), head, pool

    def train(self, mode: bool = True) -> FrozenProbe:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = pool_tokens(self.backbone, self.backbone.forward_features(images), self.pool)
        return self.head(features.float())


def make_optimizer(cfg: LinprobeConfig, params, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "lars":
        return mae_lars(params, lr, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    raise MimzooError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def mae_lars(params, lr: float, weight_decay: float) -> Lars:
    """MAE's LARS (util/lars.py) on timm's Lars. Every parameter with 2 or more dims steps along
    d = grad + weight_decay x w scaled by 0.001 ||w|| / ||d|| (1 where a norm is 0), whatever the weight decay;
    1-D parameters (biases, norms) take plain momentum steps without weight decay. Momentum 0.9, no dampening."""
    params = list(params)
    matrices, vectors = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
    # timm adapts only with always_adapt (or a non-zero decay) and adds eps to the norm; MAE does neither
    adapted = dict(params=matrices, always_adapt=True, eps=0.0)
    optimizer = Lars([adapted, dict(params=vectors)], lr=lr, momentum=0.9, weight_decay=0.0)
    if weight_decay:
        # MAE adds the decay to the gradient before the trust ratio (ratio 0.001 ||w|| / ||g + wd w||); timm's
        # decay would divide by ||g|| + wd ||w|| instead, so the decay is folded into the gradient here
        def add_decay(*_) -> None:
            for p in matrices:
                if p.grad is not None:
                    p.grad.add_(p, alpha=weight_decay)

        optimizer.register_step_pre_hook(add_decay)
    return optimizer


def linear_probe(backbone: VisionTransformer, splits: LabeledSplits, cfg: LinprobeConfig, ctx: DistContext,
                 reporter: Reporter) -> dict[str, Any]:
    """Train the probe head; returns the results (``supervised.write_results``), also written to OUT/results.json."""
    cfg.validate()
    cfg = replace(cfg, warmup_epochs=resolve_warmup(cfg.warmup_epochs, cfg.RECIPE_WARMUP, cfg.epochs),
                  blr=BLR[cfg.optimizer] if cfg.blr is None else cfg.blr)
    mode = cfg.mode if cfg.mode != "auto" else ("cached" if len(splits.train) <= CACHED_MAX_IMAGES else "augmented")
    data_cfg = backbone_data_config(backbone)
    eval_tf = create_transform(**data_cfg, is_training=False)
    eval_set = LabeledDataset(splits.val, eval_tf)
    test = (splits.test_name, LabeledDataset(splits.test, eval_tf)) if splits.test is not None else None
    head = ProbeHead(backbone.num_features, len(splits.classes)).to(ctx.device)
    lr = cfg.blr * cfg.batch_size * ctx.world_size / 256
    record = {**asdict(cfg), "mode": mode, "lr": lr, "num_classes": len(splits.classes)}
    reporter.message(f"linear probe ({mode}): {splits.summary()}, {len(splits.classes)} classes, "
                     f"lr = blr {cfg.blr:g} x {cfg.batch_size * ctx.world_size}/256")
    if mode == "augmented":
        train_tf = create_transform(data_cfg["input_size"], is_training=True, color_jitter=None,
                                    interpolation=data_cfg["interpolation"], mean=data_cfg["mean"], std=data_cfg["std"])
        model = FrozenProbe(backbone, head, cfg.pool).to(ctx.device)
        loop = SupervisedLoop(model, make_optimizer(cfg, head.parameters(), lr),
                              LabeledDataset(splits.train, train_tf), eval_set, nn.CrossEntropyLoss(),
                              _loop_config(cfg, lr), ctx, reporter, record, val_name=splits.val_name, test=test,
                              splits=splits.describe())
        return loop.run("linear probe")
    return _cached_probe(backbone, head, splits, eval_set, test, cfg, lr, ctx, reporter, record)


def _loop_config(cfg: LinprobeConfig, lr: float) -> LoopConfig:
    return LoopConfig(cfg.epochs, cfg.warmup_epochs, cfg.batch_size, lr, 0.0, cfg.workers, Path(cfg.out), cfg.resume)


def _cached_probe(backbone: VisionTransformer, head: ProbeHead, splits: LabeledSplits, eval_set: LabeledDataset,
                  test: tuple[str, LabeledDataset] | None, cfg: LinprobeConfig, lr: float, ctx: DistContext,
                  reporter: Reporter, record: dict[str, Any]) -> dict[str, Any]:
    out = Path(cfg.out)
    resume = resumable(out, cfg.resume)

    def features(dataset: LabeledDataset) -> tuple[torch.Tensor, torch.Tensor]:
        return dataset_features(backbone, dataset, cfg.batch_size, cfg.workers, ctx.device, cfg.pool, reporter)

    @torch.no_grad()
    def top1(x: torch.Tensor, y: torch.Tensor) -> float:
        head.eval()
        return 100.0 * (head(x).argmax(1) == y).float().mean().item()

    train_x, train_y = features(LabeledDataset(splits.train, eval_set.transform))
    val_x, val_y = features(eval_set)
    optimizer = make_optimizer(cfg, head.parameters(), lr)
    steps = max(1, len(train_x) // cfg.batch_size)
    scheduler = make_scheduler(optimizer, _loop_config(cfg, lr), steps)
    generator = torch.Generator().manual_seed(0)
    history: list[dict[str, Any]] = []
    if resume:  # the features are recomputed (the same: centre views of a frozen encoder); the head continues
        state = load_checkpoint(out / CHECKPOINT, ctx.device, (*CHECKPOINT_KEYS, "generator"))
        head.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = state["history"]
        generator.set_state(state["generator"])
        reporter.message(f"resumed {out} after epoch {len(history)}")
    reporter.start(cfg.epochs * steps, len(history) * steps, "linear probe")
    saved = len(history)  # epochs in the checkpoint
    step = saved * steps
    try:
        for epoch in range(len(history), cfg.epochs):
            head.train()
            order = torch.randperm(len(train_x), generator=generator).to(ctx.device)
            total = torch.zeros((), device=ctx.device)
            for i in range(steps):
                batch = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                loss = nn.functional.cross_entropy(head(train_x[batch]), train_y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step = epoch * steps + i + 1
                scheduler.step_update(step)
                total += loss.detach()
            mean = total.item() / steps
            if not math.isfinite(mean):
                raise non_finite(epoch + 1)
            accuracy = top1(val_x, val_y)
            history.append({"epoch": epoch + 1, "train_loss": mean, "split": splits.val_name, "top1": accuracy})
            reporter.update((epoch + 1) * steps, {"loss": mean, "top1": accuracy})
            if ctx.is_main:
                save_checkpoint(out / CHECKPOINT, {"model": head.state_dict(), "optimizer": optimizer.state_dict(),
                                                   "epoch": epoch + 1, "history": history,
                                                   "generator": generator.get_state(), "config": record})
            saved = epoch + 1
    except KeyboardInterrupt:
        raise Interrupted(step, cfg.epochs * steps, f"epoch {saved}" if saved else None) from None
    finally:
        reporter.stop()
    final = (test[0], {"top1": top1(*features(test[1]))}) if test is not None else None
    return write_results(out, history, record, ctx, final=final, splits=splits.describe())
