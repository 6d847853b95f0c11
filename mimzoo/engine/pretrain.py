"""The pretraining loop: DDP, bf16 on CUDA, gradient accumulation, atomic checkpoints, exact resume.

A run folder holds ``config.json`` (resolved config), ``metrics.jsonl`` (one line per log step),
``checkpoint.pt`` (everything needed to resume) and, at the end, ``export/`` (a Hub-ready folder, see
``mimzoo.hub.layout``).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from timm.optim import param_groups_weight_decay
from torch.nn.parallel import DistributedDataParallel

from mimzoo.archs import get_arch
from mimzoo.data.limit import limit_source
from mimzoo.data.loader import SkippedImages, normalize
from mimzoo.data.pipeline import view_pipeline
from mimzoo.data.sources import open_source
from mimzoo.data.transforms import make_view
from mimzoo.engine import distributed as dist_utils
from mimzoo.engine.atomic import atomic_path
from mimzoo.engine.checkpoint import (
    CHECKPOINT,
    load_checkpoint,
    resumable,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mimzoo.engine.config import PretrainConfig, default_out
from mimzoo.engine.defaults import resolve_warmup
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.init_from import init_from
from mimzoo.engine.metrics_log import METRICS, append_metrics, truncate_metrics
from mimzoo.engine.optim import adamw, load_optimizer_state
from mimzoo.engine.outputs import writable_folder
from mimzoo.engine.report import Reporter, for_rank
from mimzoo.engine.schedule import warmup_cosine
from mimzoo.engine.stops import HeldStops
from mimzoo.errors import Interrupted, MimzooError
from mimzoo.hub.export import export_run
from mimzoo.hub.layout import previous_export
from mimzoo.methods import Pretrainer, get_method, resolve_defaults, view_size
from mimzoo.wording import counted

# the list every method used before config.json recorded one; a resumed older run keeps it (its optimizer state
# was saved in these groups)
LEGACY_NO_WEIGHT_DECAY = ["*pos_embed", "*cls_token", "*reg_token", "*mask_token"]
RUN_CONFIG, EXPORT = "config.json", "export"  # in a run folder, beside checkpoint.pt and metrics.jsonl
BETWEEN, FORWARD, APPLYING = range(3)
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "step", "skipped", "rng", "config")


@dataclass
class Schedule:
    """Step accounting: a step is one optimizer update of ``accum`` micro-batches on every rank."""

    steps_per_epoch: int
    epochs: int
    effective_batch: int
    lr: float

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def plan_schedule(cfg: PretrainConfig, dataset_size: int, world_size: int) -> Schedule:
    effective = cfg.batch_size * cfg.accum * world_size
    steps = dataset_size // effective
    if steps == 0:
        raise MimzooError(
            f"effective batch {effective} (--batch-size {cfg.batch_size} x --accum {cfg.accum} x {world_size} "
            f"processes) is larger than the dataset ({dataset_size} images); lower --batch-size or --accum"
        )
    return Schedule(steps, cfg.epochs, effective, cfg.blr * effective / 256)


# what the checkpoint's model and task are: a resume may extend or tune a run, not turn it into another one
RUN_IDENTITY = ("arch", "method", "target", "degradation", "fusion", "mff_layers", "mask_unit", "localmim_scales",
                "hog_bins", "hog_bias")


def resolve_run_config(cfg: PretrainConfig, resume: bool, explicit: set[str]) -> PretrainConfig:
    """For a resume, start from the checkpoint's config and apply only options the user gave explicitly."""
    ckpt_path = Path(cfg.out) / CHECKPOINT
    previous_export(Path(cfg.out) / EXPORT)  # a folder the final export could not replace stops the run now
    if not resumable(Path(cfg.out), resume):
        _check_fresh_folder(Path(cfg.out))
        return cfg
    saved = PretrainConfig.from_dict(load_checkpoint(ckpt_path, torch.device("cpu"), CHECKPOINT_KEYS)["config"])
    if saved.no_weight_decay is None:
        saved.no_weight_decay = list(LEGACY_NO_WEIGHT_DECAY)
    for key in RUN_IDENTITY:
        if key in explicit and getattr(cfg, key) != getattr(saved, key):
            raise MimzooError(
                f"{cfg.out} was pretrained with {key} {getattr(saved, key)!r}, not {getattr(cfg, key)!r}; "
                f"drop --{key.replace('_', '-')} to resume it or choose a new --out"
            )
    for key in explicit - {"arch", "method", "out", "init_from"}:  # the checkpoint holds the weights: resume wins
        setattr(saved, key, getattr(cfg, key))
    saved.out = cfg.out
    return saved


def weight_decay_groups(model: torch.nn.Module, cfg: PretrainConfig) -> list[dict[str, Any]]:
    """AdamW's parameter groups: ``cfg.weight_decay`` on every trainable parameter but 1-D ones, biases and names
    matching ``cfg.no_weight_decay`` (fnmatch patterns), which take none."""
    return param_groups_weight_decay(model, cfg.weight_decay, no_weight_decay_list=cfg.no_weight_decay)


def pretrain_optimizer(model: torch.nn.Module, cfg: PretrainConfig, lr: float,
                       device: torch.device) -> torch.optim.AdamW:
    """MAE's AdamW(0.9, 0.95) over ``weight_decay_groups`` (fused on a GPU), as every pretraining steps."""
    return adamw(weight_decay_groups(model, cfg), lr, device, betas=(0.9, 0.95))


def _check_fresh_folder(out: Path) -> None:
    """A new run may start where one died before its first checkpoint (its config.json and metrics log are mimzoo's
    and start again), but never over a config.json or metrics log that mimzoo did not write."""
    config, metrics = out / RUN_CONFIG, out / METRICS
    if config.exists() and not _is_run_config(config):
        raise MimzooError(f"{config} was not written by mimzoo pretrain; choose a new --out (a run writes its own)")
    if metrics.exists() and not config.exists():
        raise MimzooError(f"{metrics} was not written by a mimzoo run (it has no {RUN_CONFIG} beside it); choose a "
                          "new --out or move it")


def _check_out_beside_data(out: Path, data: str) -> None:
    """A run folder inside an image folder would join its data: the figures plot and visualize draw into the run
    are images the next run on that folder would train on."""
    folder = Path(data).expanduser()
    if folder.is_dir() and out.resolve().is_relative_to(folder.resolve()):
        raise MimzooError(f"--out {out} lies inside --data {data}, so the run's figures would become training images; "
                          "choose an --out outside the data")


def _is_run_config(path: Path) -> bool:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(values, dict) and {"method", "arch", "out", "world_size"} <= values.keys()


def pretrain(cfg: PretrainConfig, resume: bool = False, explicit: set[str] | None = None,
             reporter: Reporter | None = None) -> Path:
    """Pretrain ``cfg.method`` on ``cfg.data``; returns the export folder. Works under torchrun."""
    cfg = replace(cfg, out=cfg.out or default_out(cfg.method))
    cfg = resolve_defaults(resolve_run_config(cfg, resume, explicit or set()))
    cfg.warmup_epochs = resolve_warmup(cfg.warmup_epochs, get_method(cfg.method).warmup_epochs(cfg.epochs), cfg.epochs)
    cfg.validate()
    _check_out_beside_data(writable_folder(Path(cfg.out)), cfg.data)
    arch = get_arch(cfg.arch)
    ctx = dist_utils.init_distributed(cfg.device)
    reporter = for_rank(reporter, ctx.is_main)
    if resume and "init_from" in (explicit or set()):
        reporter.message(f"--init-from ignored: {cfg.out} resumes from its checkpoint, which holds the weights")
    try:
        return _Trainer(cfg, arch, ctx, reporter).run()
    finally:
        dist_utils.shutdown_distributed()


class _Trainer:
    def __init__(self, cfg: PretrainConfig, arch, ctx: DistContext, reporter: Reporter) -> None:
        self.cfg, self.arch, self.ctx, self.reporter = cfg, arch, ctx, reporter
        self.run_dir = Path(cfg.out)
        spec = get_method(cfg.method)
        source = limit_source(open_source(cfg.data), cfg.limit, cfg.seed)
        pipeline = view_pipeline(source, make_view(cfg.crop, view_size(arch, cfg)), cfg.seed, cfg.data_device,
                                 ctx.device, cfg.batch_size, cfg.workers, ctx.world_size, ctx.rank)
        self.dataset, self.sampler, self.loader = pipeline.dataset, pipeline.sampler, pipeline.loader
        self.skips = SkippedImages(source, reporter.message)
        self.schedule = plan_schedule(cfg, len(self.dataset), ctx.world_size)

        torch.manual_seed(cfg.seed)
        self.method: Pretrainer = spec.build(arch, cfg).to(ctx.device)
        if cfg.init_from and not (self.run_dir / CHECKPOINT).exists():
            reporter.message(init_from(ctx, self.method, cfg))
        self.optimizer = pretrain_optimizer(self.method, cfg, self.schedule.lr, ctx.device)
        self.scheduler = warmup_cosine(self.optimizer, cfg.epochs, cfg.warmup_epochs,
                                       self.schedule.steps_per_epoch, cfg.min_lr)
        self.step, self.skipped, self.saved_step = 0, 0, 0
        self.pending: list[torch.Tensor] = []  # (loss, grad norm) of the steps since the last _check_finite
        # where a stop finds the state (see _stop): BETWEEN steps, in a step's FORWARD and backward (the
        # snapshot of its start restores the step's draws), or APPLYING its update (held back from the main
        # thread's signals, with the step's log line and checkpoint; a stop raised there otherwise saves nothing)
        self.phase, self.snapshot = BETWEEN, None  # snapshot: (skipped, len(pending), rng_state()) at a step's start
        self.last_stats = (math.nan, math.nan)
        self.model: torch.nn.Module = self.method
        if ctx.enabled:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.method, device_ids=ids)
        if cfg.compile:
            self.model = torch.compile(self.model)
        torch.manual_seed(cfg.seed + ctx.rank)  # masks differ per rank; init above is shared
        if (self.run_dir / CHECKPOINT).exists():
            self._load()

    # ---- checkpoints ----------------------------------------------------------------------------
    def _load(self) -> None:
        state = load_checkpoint(self.run_dir / CHECKPOINT, self.ctx.device, CHECKPOINT_KEYS)
        self._check_same_batch(state["config"], len(state["rng"]))
        self.method.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        fresh = self.scheduler.state_dict()
        if all(state["scheduler"].get(k) == fresh[k] for k in ("t_initial", "warmup_t", "lr_min")):
            self.scheduler.load_state_dict(state["scheduler"])
        else:  # --epochs or --warmup-epochs changed on resume: the lr follows the new schedule from here
            self.reporter.message("schedule changed since the checkpoint: the lr follows the new schedule")
        self.step, self.skipped = state["step"], state["skipped"]
        self.saved_step = self.step
        rng = state["rng"]
        if len(rng) == self.ctx.world_size:
            set_rng_state(rng[self.ctx.rank])
        else:  # a different process count: views are still exact, masks continue from a fresh seed
            torch.manual_seed(self.cfg.seed + self.ctx.rank + self.step)
        self.reporter.message(f"resumed {self.run_dir} at step {self.step} of {self.schedule.total_steps}")

    def _check_same_batch(self, saved: dict[str, Any], saved_world: int) -> None:
        """A step is one effective batch of images: with another effective batch the checkpoint's step would land
        elsewhere in the epoch (and the schedule's epochs would count other steps), so the resume is refused."""
        before, now = saved["batch_size"] * saved["accum"] * saved_world, self.schedule.effective_batch
        if before != now:
            cfg, world = self.cfg, self.ctx.world_size
            fits = (f" (e.g. --batch-size {before // (cfg.accum * world)})" if before % (cfg.accum * world) == 0
                    else "")
            raise MimzooError(
                f"{self.run_dir} was trained with effective batch {before} (--batch-size {saved['batch_size']} x "
                f"--accum {saved['accum']} x {saved_world} processes), not {now}; resume with the same product"
                f"{fits} or start a new --out")

    def _save(self) -> None:
        rng = dist_utils.all_gather_object(self.ctx, rng_state())
        if self.ctx.is_main:
            save_checkpoint(self.run_dir / CHECKPOINT, {
                "model": self.method.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "skipped": self.skipped,
                "rng": rng,
                "config": self.cfg.to_dict(),
            })
        dist_utils.barrier(self.ctx)
        self.saved_step = self.step

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg, sched = self.cfg, self.schedule
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.run_dir / RUN_CONFIG) as tmp:
                tmp.write_text(json.dumps({**cfg.to_dict(), "world_size": self.ctx.world_size}, indent=2))
            truncate_metrics(self.run_dir, self.step)  # steps after the checkpoint (all, for a new run) run again
        self.reporter.message(
            f"{cfg.method} {cfg.arch} on {cfg.data} ({counted(len(self.dataset), 'image')}): effective batch "
            f"{cfg.batch_size} x accum {cfg.accum} x {self.ctx.world_size} processes = {sched.effective_batch}, "
            f"lr = blr {cfg.blr:g} x {sched.effective_batch}/256 = {sched.lr:.3g} (cosine to {cfg.min_lr:g}), "
            f"{sched.steps_per_epoch} steps/epoch, "
            f"{counted(cfg.epochs, 'epoch')} ({cfg.warmup_epochs:g} warm-up), device {self.ctx.device}"
        )
        self.scheduler.step_update(self.step)
        self.reporter.start(sched.total_steps, self.step, "pretrain")
        try:
            with HeldStops() as self.stops:
                while self.step < sched.total_steps:
                    self._run_epoch(self.step // sched.steps_per_epoch)
        except KeyboardInterrupt:
            try:
                self._stop()
            except KeyboardInterrupt:  # a second stop cuts the save short: the last checkpoint stands
                pass
            saved = f"step {self.saved_step}" if (self.run_dir / CHECKPOINT).exists() else None
            raise Interrupted(self.step, sched.total_steps, saved) from None
        finally:
            self.reporter.stop()
        if self.ctx.enabled:
            self.reporter.message(dist_utils.check_replicas_in_sync(self.ctx, self.method))
        export = self.run_dir / EXPORT
        if self.ctx.is_main:
            export_run(self.run_dir, export, reporter=self.reporter)  # from the final checkpoint, as `mimzoo export`
            self.reporter.message(f"done: exported to {export} (plain-timm encoder, model card, full pretrainer)")
        dist_utils.barrier(self.ctx)
        return export

    def _run_epoch(self, epoch: int) -> None:
        cfg, sched = self.cfg, self.schedule
        done_in_epoch = self.step - epoch * sched.steps_per_epoch
        self.sampler.set_epoch(epoch, skip=done_in_epoch * cfg.accum * cfg.batch_size)
        batches = iter(self.loader)
        window_start, window_images = time.perf_counter(), 0
        for _ in range(done_in_epoch, sched.steps_per_epoch):
            lr = self.optimizer.param_groups[0]["lr"]
            self.snapshot, self.phase = (self.skipped, len(self.pending), rng_state()), FORWARD
            logs = self._gradients(batches)
            # a stop waits for the update, its metrics line and its checkpoint: it finds step self.step whole
            with self.stops.hold():
                self.phase = APPLYING
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.scheduler.step_update(self.step)
                self.phase = BETWEEN
                window_images += sched.effective_batch
                end_of_epoch = self.step % sched.steps_per_epoch == 0
                if self.step % cfg.log_every == 0 or end_of_epoch:
                    loss, grad_norm = self._check_finite()
                    elapsed = time.perf_counter() - window_start
                    self._log({"step": self.step, "epoch": round(self.step / sched.steps_per_epoch, 4),
                               "loss": loss, "lr": lr, "grad_norm": grad_norm,
                               "img_per_s": round(window_images / elapsed, 1), "skipped_images": self.skipped,
                               **_loggable(logs)})
                    window_start, window_images = time.perf_counter(), 0
                if self.step % cfg.ckpt_every == 0 or self.step == sched.total_steps:
                    self._check_finite()
                    self._save()

    def _gradients(self, batches) -> dict[str, torch.Tensor]:
        """One effective batch's forward and backward passes and clipped gradients; the method's logs."""
        cfg, device = self.cfg, self.ctx.device
        loss_sum = torch.zeros((), device=device)
        for micro in range(cfg.accum):
            images, bad = next(batches)
            self.skipped += self.skips.count(bad)
            sync = micro == cfg.accum - 1
            no_sync = self.model.no_sync() if self.ctx.enabled and not sync else nullcontext()
            with no_sync:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    out = self.model(normalize(images, device))
                (out.loss / cfg.accum).backward()
            loss_sum += out.loss.detach().float()
        max_norm = cfg.clip_grad if cfg.clip_grad else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.method.parameters(), max_norm)
        # grad norms agree across ranks; the mean stays on the device until _check_finite reads it
        self.pending.append(dist_utils.mean_across_ranks(self.ctx, torch.stack([loss_sum / cfg.accum,
                                                                                grad_norm.float()])))
        return out.logs

    def _stop(self) -> None:
        """Ctrl-C or SIGTERM: keep the steps done since the last checkpoint. Outside an update the state is that of
        step ``self.step`` (a step stopped in its forward or backward is undone: its count of unreadable images,
        its random draws and its gradients); one process only, as the ranks of a DDP run stop at different points."""
        if self.ctx.enabled or self.phase == APPLYING or self.saved_step == self.step:
            return
        if self.phase == FORWARD:
            self.skipped, pending, rng = self.snapshot
            del self.pending[pending:]
            set_rng_state(rng)
            self.optimizer.zero_grad(set_to_none=True)
        self._check_finite()
        self._save()

    def _check_finite(self) -> tuple[float, float]:
        """The non-finite guard, read at log and checkpoint steps only: one host sync for all the steps since the
        last read, none in between. A non-finite step stops the run before anything is logged or saved after it
        (the steps up to the read ran on, harmlessly: their weights are never written). Returns the last step's
        (loss, gradient norm)."""
        if self.pending:
            values = torch.stack(self.pending).tolist()
            first = self.step - len(values) + 1
            for offset, (loss, norm) in enumerate(values):
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    self.optimizer.zero_grad(set_to_none=True)
                    raise MimzooError(
                        f"non-finite loss ({loss}) or gradient norm at step {first + offset}; stopped, the last good "
                        f"checkpoint is kept in {self.run_dir} (lower --blr or set --clip-grad, then --resume)"
                    )
            self.pending = []  # only once all passed: a stop inside this loop must not find them checked
            self.last_stats = values[-1]
        return self.last_stats

    def _log(self, record: dict[str, Any]) -> None:
        self.reporter.update(self.step, record)
        if self.ctx.is_main:
            append_metrics(self.run_dir, record)


def _loggable(logs: dict[str, torch.Tensor]) -> dict[str, float | list[float]]:
    """A method's extra logs as JSON numbers, read from the device only at log steps."""
    return {k: [round(x, 6) for x in v.detach().float().flatten().tolist()] if v.numel() > 1 else v.item()
            for k, v in logs.items()}
