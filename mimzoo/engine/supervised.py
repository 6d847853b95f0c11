"""The supervised loop shared by fine-tuning and the augmented linear probe.

Epoch-granular: bf16 autocast on CUDA, DDP under torchrun, per-iteration lr schedule (timm's, so the
``lr_scale`` of layer-decay groups is applied), top-1 on the validation split after every epoch, an atomic
checkpoint after every epoch that ``resume`` continues from, and ``results.json``.

The protocol: the result is the last epoch's, never the best one's. With a test split (the data's evaluation split,
when the epochs are measured on a validation carve of train), the test split is measured once, after the last
epoch, and reported; the carve's curve (last and best epoch) is kept beside it for choosing recipes. Without one,
the epochs are measured on the evaluation split and the last is reported. Every number says its split.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from mimzoo.data.loader import SkipReportingLoader, worker_stops_quietly
from mimzoo.engine import distributed as dist_utils
from mimzoo.engine.atomic import atomic_path
from mimzoo.engine.checkpoint import CHECKPOINT, load_checkpoint, resumable, rng_state, save_checkpoint, set_rng_state
from mimzoo.engine.config import MAX_LR
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.optim import load_optimizer_state
from mimzoo.engine.outputs import RESULTS, marked, replaceable, results_are_ours
from mimzoo.engine.report import Reported, Reporter
from mimzoo.engine.schedule import warmup_cosine
from mimzoo.errors import Interrupted, MimzooError, in_range, in_range_if_set


def fine_tuning_checks(cfg: Any) -> list[tuple[bool, str]]:
    """The range checks of the settings that finetune and segment share (epochs, warm-up, batch, lrs, decays,
    workers), for their ``validate``."""
    return [
        in_range("--epochs", cfg.epochs, 1),
        in_range_if_set("--warmup-epochs", cfg.warmup_epochs, 0),
        in_range("--batch-size", cfg.batch_size, 1),
        in_range("--blr", cfg.blr, 0, MAX_LR, low_open=True),
        in_range("--min-lr", cfg.min_lr, 0, MAX_LR),
        in_range("--weight-decay", cfg.weight_decay, 0),
        in_range("--layer-decay", cfg.layer_decay, 0, 1, low_open=True),
        in_range("--workers", cfg.workers, 0),
    ]


@dataclass
class LoopConfig:
    epochs: int
    warmup_epochs: float
    batch_size: int  # per process
    lr: float
    min_lr: float
    workers: int
    out: Path
    resume: bool = False
    clip_grad: float | None = None
    eval_batch_size: int | None = None  # None = batch_size


CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "history")


def non_finite(epoch: int) -> MimzooError:
    """The error of a training loss that became NaN or infinite: nothing of the run is recorded."""
    return MimzooError(f"non-finite training loss in epoch {epoch}: training diverged and nothing was recorded; "
                       "lower --blr and start again in a new --out")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: LoopConfig, steps_per_epoch: int) -> CosineLRScheduler:
    return warmup_cosine(optimizer, cfg.epochs, cfg.warmup_epochs, steps_per_epoch, cfg.min_lr)


HISTORY_KEYS = ("epoch", "train_loss", "split")  # the rest of a history row is what the evaluator measured
Evaluator = Callable[[torch.nn.Module, Iterable[tuple], DistContext], dict[str, Any]]


def write_results(out: Path, history: list[dict[str, Any]], record: dict[str, Any], ctx: DistContext,
                  headline: str = "top1", details: dict[str, Any] | None = None,
                  final: tuple[str, dict[str, Any]] | None = None,
                  splits: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write OUT/results.json (rank 0) and return it: the last epoch's metrics with ``details`` (the last
    evaluation's non-scalar metrics), or ``final``, (test split name, its metrics) measured once after the last
    epoch, with the validation curve's last and best ``headline`` under "val". ``splits``: each split's name and
    size."""
    last = history[-1]
    split, measured = final or (last["split"], {**{k: v for k, v in last.items() if k not in HISTORY_KEYS},
                                                **(details or {})})
    results = {**measured, "split": split, "epoch": last["epoch"], "epochs": len(history)}
    if final is not None:
        best = max(history, key=lambda h: h[headline])
        results["val"] = {"split": last["split"], f"last_{headline}": last[headline],
                          f"best_{headline}": best[headline], "best_epoch": best["epoch"]}
    results.update(splits=splits or {}, history=history, config=record)
    return save_results(out, results, ctx)


def save_results(out: Path, results: dict[str, Any], ctx: DistContext) -> dict[str, Any]:
    """Write ``results``, marked as mimzoo's, to OUT/results.json atomically (rank 0) and return them."""
    results = marked(results)
    if ctx.is_main:
        with atomic_path(replaceable(out / RESULTS, results_are_ours)) as tmp:
            tmp.write_text(json.dumps(results, indent=2))
    return results


def _shown(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float))


@torch.no_grad()
def top1_evaluator(model: torch.nn.Module, loader: Iterable[tuple], ctx: DistContext) -> dict[str, Any]:
    """Top-1 accuracy (%) over the whole split; each rank scores its slice and the counts are summed."""
    device = ctx.device
    counts = torch.zeros(2, device=device)
    for images, labels in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(images.to(device, non_blocking=True))
        counts[0] += (logits.argmax(-1) == labels.to(device)).sum()
        counts[1] += labels.numel()
    counts = dist_utils.mean_across_ranks(ctx, counts) * ctx.world_size
    return {"top1": 100.0 * counts[0].item() / max(1.0, counts[1].item())}


class SupervisedLoop:
    """Trains ``model`` (its trainable parameters are those the optimizer holds) and tracks top-1."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_set: Dataset,
                 val_set: Dataset, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 cfg: LoopConfig, ctx: DistContext, reporter: Reporter, config_record: dict[str, Any],
                 batch_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None
                 = None, evaluator: Evaluator = top1_evaluator, headline: str = "top1", val_name: str = "val",
                 test: tuple[str, Dataset] | None = None, splits: dict[str, Any] | None = None) -> None:
        """val_set (called ``val_name``) is measured after every epoch; ``test``, (name, dataset), once after the
        last (see the module docstring); ``splits`` goes to results.json as it is."""
        self.cfg, self.ctx, self.reporter, self.record = cfg, ctx, reporter, config_record
        self.evaluator, self.headline, self.details = evaluator, headline, {}
        self.val_name, self.splits = val_name, splits
        self.model, self.optimizer, self.criterion, self.batch_transform = model, optimizer, criterion, batch_transform
        self.sampler = DistributedSampler(train_set, ctx.world_size, ctx.rank, shuffle=True, drop_last=True)
        pin = ctx.device.type == "cuda"
        # the datasets' batches end with the index of any image they had to replace; the loaders report those
        self.train_loader = SkipReportingLoader(
            DataLoader(train_set, cfg.batch_size, sampler=self.sampler, num_workers=cfg.workers, drop_last=True,
                       pin_memory=pin, worker_init_fn=worker_stops_quietly), train_set.source, reporter.message)
        if len(self.train_loader) == 0:
            raise MimzooError(f"--batch-size {cfg.batch_size} x {ctx.world_size} processes is larger than the "
                              f"training split ({len(train_set)} images); lower --batch-size")
        self.val_loader = self._eval_loader(val_set)
        self.test_name, self.test_loader = (test[0], self._eval_loader(test[1])) if test else (None, None)
        self.scheduler = make_scheduler(optimizer, cfg, len(self.train_loader))
        self.module = model
        if ctx.enabled:
            self.model = DistributedDataParallel(model, device_ids=[ctx.device.index] if pin else None)
        self.epoch, self.history, self.step = 0, [], 0
        if resumable(cfg.out, cfg.resume):
            self._load()

    def _eval_loader(self, dataset: Dataset) -> SkipReportingLoader:
        # every rank scores a disjoint slice of the split; counts are summed (no padding duplicates)
        part = Subset(dataset, range(self.ctx.rank, len(dataset), self.ctx.world_size))
        return SkipReportingLoader(
            DataLoader(part, self.cfg.eval_batch_size or self.cfg.batch_size, num_workers=self.cfg.workers,
                       pin_memory=self.ctx.device.type == "cuda", worker_init_fn=worker_stops_quietly),
            dataset.source, self.reporter.message)

    def _load(self) -> None:
        state = load_checkpoint(self.cfg.out / CHECKPOINT, self.ctx.device, CHECKPOINT_KEYS)
        self.module.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.epoch, self.history = state["epoch"], state["history"]
        rng = state.get("rng", [])  # older checkpoints have none: the run continues, not bit-exactly
        if len(rng) == self.ctx.world_size:  # the augmentations, Mixup and drop path continue exactly
            set_rng_state(rng[self.ctx.rank])
        self.reporter.message(f"resumed {self.cfg.out} after epoch {self.epoch}")

    def _save(self) -> None:
        rng = dist_utils.all_gather_object(self.ctx, rng_state())
        if self.ctx.is_main:
            save_checkpoint(self.cfg.out / CHECKPOINT, {"model": self.module.state_dict(),
                                                        "optimizer": self.optimizer.state_dict(),
                                                        "epoch": self.epoch, "history": self.history, "rng": rng,
                                                        "config": self.record})
        dist_utils.barrier(self.ctx)

    def run(self, description: str) -> dict[str, Any]:
        steps = len(self.train_loader)
        self.scheduler.step_update(self.epoch * steps)
        self.reporter.start(self.cfg.epochs * steps, self.epoch * steps, description)
        try:
            while self.epoch < self.cfg.epochs:
                loss = self._train_epoch()
                self.model.eval()
                metrics = self._evaluate(self.val_loader, self.val_name)
                self.epoch += 1
                scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
                self.details = {k: v for k, v in metrics.items() if k not in scalars}
                self.history.append({"epoch": self.epoch, "train_loss": loss, "split": self.val_name, **scalars})
                self.reporter.message(f"epoch {self.epoch}: train loss {loss:.4f}, {self.val_name} {_shown(scalars)}")
                self._save()
        except KeyboardInterrupt:
            saved = f"epoch {self.epoch}" if (self.cfg.out / CHECKPOINT).exists() else None
            raise Interrupted(self.step, self.cfg.epochs * steps, saved) from None
        finally:
            self.reporter.stop()
        final = None
        if self.test_loader is not None:
            self.model.eval()
            final = (self.test_name, self._evaluate(self.test_loader, self.test_name))
            self.reporter.message(f"{self.test_name} (after the last epoch): {_shown(final[1])}")
        return write_results(self.cfg.out, self.history, self.record, self.ctx, self.headline, self.details, final,
                             self.splits)

    def _evaluate(self, loader: SkipReportingLoader, split: str) -> dict[str, Any]:
        """The evaluator on ``split``, showing its progress below the training's."""
        with Reported(loader, self.reporter, f"evaluate {split}") as batches:
            return self.evaluator(self.module, batches, self.ctx)

    def _train_epoch(self) -> float:
        device, steps = self.ctx.device, len(self.train_loader)
        self.sampler.set_epoch(self.epoch)
        self.model.train()
        total = torch.zeros((), device=device)
        window_start, window_images = time.perf_counter(), 0
        for i, (images, labels) in enumerate(self.train_loader):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if self.batch_transform is not None:
                images, labels = self.batch_transform(images, labels)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = self.criterion(self.model(images), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.clip_grad)
            self.optimizer.step()
            step = self.step = self.epoch * steps + i + 1
            self.scheduler.step_update(step)
            total += loss.detach().float()
            window_images += images.shape[0] * self.ctx.world_size
            logs = {}
            if step % 10 == 0:  # the loss read waits for the device, so the rate is the device's too
                logs = {"loss": loss.item()}
                logs["img_per_s"] = round(window_images / (time.perf_counter() - window_start), 1)
                window_start, window_images = time.perf_counter(), 0
            self.reporter.update(step, logs)
        mean = dist_utils.mean_across_ranks(self.ctx, total / steps).item()
        if not math.isfinite(mean):
            raise non_finite(self.epoch + 1)
        return mean
