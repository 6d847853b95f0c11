"""``mimzoo knn | linprobe | finetune | segment BACKBONE``: downstream tasks on any backbone spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mimzoo.engine.defaults import MAX_WARMUP_FRACTION
from mimzoo_cli.choices import Pool as PoolChoice
from mimzoo_cli.choices import ProbeMode, ProbeOptimizer
from mimzoo_cli.console import console, fail_cleanly, is_main_process
from mimzoo_cli.help import Workers, workers_or_default

Backbone = Annotated[str, typer.Argument(
    help="hf-hub:ORG/NAME\\[@REV], local-dir:PATH, an export folder, a .safetensors file or a zoo name.")]
Data = Annotated[str, typer.Option(
    help="Labelled data: builtin, PACK.npz (train_/test_ keys), or a folder with train/ and val/ class folders.")]
ValFraction = Annotated[float | None, typer.Option(
    help="Carve this fraction of train as validation (stratified): each epoch is measured there, and the data's own "
    "val/test split once at the end, which is reported.")]
Arch = Annotated[str | None, typer.Option(help="Arch of a bare .safetensors file that has no config.json.")]
Pool = Annotated[PoolChoice, typer.Option(help="token (cls after the final norm) or avg (mean of patch tokens).")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Limit = Annotated[int | None, typer.Option(
    help="A trial on N images of each split (the same seeded subset every time); recorded in results.json.",
    show_default="all")]


def warmup_help(recipe: int) -> str:
    return f"Linear warm-up epochs (default: the recipe's {recipe}, at most {MAX_WARMUP_FRACTION:g} x --epochs)."

Seed = Annotated[int, typer.Option(help="Random seed (also for --val-fraction).")]
Out = Annotated[Path, typer.Option(help="Results folder (results.json, checkpoint).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")]


def _inputs(backbone: str, data: str, val_fraction: float | None, arch: str | None, device: str, seed: int,
            limit: int | None):
    from mimzoo.engine.downstream import DownstreamInput

    return DownstreamInput(backbone, data, val_fraction, arch, device, seed, limit=limit)


def _report_top1(results: dict) -> None:
    if is_main_process():
        val = results.get("val")
        carve = (f"; {val['split']}: last {val['last_top1']:.2f}, best {val['best_top1']:.2f} (epoch "
                 f"{val['best_epoch']})") if val else ""
        console.print(f"{results['split']} top-1 {results['top1']:.2f} (epoch {results['epoch']}, the last){carve}",
                      highlight=False)


@fail_cleanly
def knn(backbone: Backbone, data: Data = "builtin", k: int = 20, temperature: float = 0.07,
        pool: Pool = PoolChoice.token, val_fraction: ValFraction = None, limit: Limit = None, batch_size: int = 256,
        arch: Arch = None, device: Device = "auto", workers: Workers = None, seed: Seed = 0,
        out: Out = Path("runs/knn")) -> None:
    """Weighted kNN (k=20, T=0.07) on frozen, L2-normalised features: the quickest quality signal."""
    from mimzoo.engine.downstream import KnnConfig, run_knn
    from mimzoo_cli.progress import RichReporter

    cfg = KnnConfig(k=k, temperature=temperature, pool=pool.value, batch_size=batch_size,
                    workers=workers_or_default(workers), out=str(out))
    run_knn(_inputs(backbone, data, val_fraction, arch, device, seed, limit), cfg, RichReporter())


@fail_cleanly
def linprobe(backbone: Backbone, data: Data = "builtin", pool: Pool = PoolChoice.token,
             mode: Annotated[ProbeMode, typer.Option(help="auto (cached up to 100k images), cached or augmented.")]
             = ProbeMode.auto,
             optimizer: Annotated[ProbeOptimizer, typer.Option(
                 help="lars (MAE), sgd, or adamw (the official-code anchor's protocol: standardised features, "
                 "AdamW; its own row in the card).")] = ProbeOptimizer.lars,
             epochs: int = 90,
             warmup_epochs: Annotated[float | None, typer.Option(help=warmup_help(10))] = None,
             batch_size: int = 256,
             blr: Annotated[float | None, typer.Option(
                 help="Base lr; lr = blr x batch / 256 (default: 0.1 for lars and sgd, 1e-3 for adamw).",
                 show_default=False)] = None,
             weight_decay: float = 0.0, val_fraction: ValFraction = None, limit: Limit = None, arch: Arch = None,
             device: Device = "auto", workers: Workers = None, seed: Seed = 0, out: Out = Path("runs/linprobe"),
             resume: Resume = False) -> None:
    """Linear probe: frozen encoder, BatchNorm1d(affine=False) + Linear, LARS (MAE's protocol) or AdamW."""
    from mimzoo.engine.downstream import run_linprobe
    from mimzoo.engine.linprobe import LinprobeConfig
    from mimzoo_cli.progress import RichReporter

    cfg = LinprobeConfig(pool=pool.value, mode=mode.value, optimizer=optimizer.value, epochs=epochs,
                         warmup_epochs=warmup_epochs, batch_size=batch_size, blr=blr, weight_decay=weight_decay,
                         workers=workers_or_default(workers), out=str(out), resume=resume)
    _report_top1(run_linprobe(_inputs(backbone, data, val_fraction, arch, device, seed, limit), cfg, RichReporter()))


@fail_cleanly
def finetune(backbone: Backbone, data: Data = "builtin", epochs: int = 100,
             warmup_epochs: Annotated[float | None, typer.Option(help=warmup_help(5))] = None,
             batch_size: Annotated[int, typer.Option(help="Per process.")] = 64,
             blr: Annotated[float, typer.Option(help="Base lr; lr = blr x effective batch / 256.")] = 5e-4,
             min_lr: float = 1e-6, weight_decay: float = 0.05,
             layer_decay: Annotated[float, typer.Option(help="Layer-wise lr decay (0.65 B, 0.75 L/H).")] = 0.65,
             drop_path: float = 0.1, smoothing: float = 0.1, mixup: float = 0.8, cutmix: float = 1.0,
             reprob: Annotated[float, typer.Option(help="Random-erasing probability.")] = 0.25,
             auto_augment: Annotated[str, typer.Option(help="timm RandAugment spec; '' for none.")]
             = "rand-m9-mstd0.5-inc1-mmax9",
             pool: Annotated[PoolChoice, typer.Option(help="avg (+ fresh fc_norm, MAE) or token.")] = PoolChoice.avg,
             clip_grad: float | None = None, val_fraction: ValFraction = None, limit: Limit = None, arch: Arch = None,
             device: Device = "auto", workers: Workers = None, seed: Seed = 0, out: Out = Path("runs/finetune"),
             resume: Resume = False) -> None:
    """Fine-tune with MAE's recipe (layer decay, drop path, RandAugment, Mixup/CutMix, label smoothing).

    Multi-GPU: [bold]torchrun --nproc-per-node=8 -m mimzoo finetune BACKBONE ...[/bold]
    """
    from mimzoo.engine.downstream import run_finetune
    from mimzoo.engine.finetune import FinetuneConfig
    from mimzoo_cli.progress import RichReporter

    cfg = FinetuneConfig(epochs=epochs, warmup_epochs=warmup_epochs, batch_size=batch_size, blr=blr, min_lr=min_lr,
                         weight_decay=weight_decay, layer_decay=layer_decay, drop_path=drop_path,
                         smoothing=smoothing, mixup=mixup, cutmix=cutmix, reprob=reprob, auto_augment=auto_augment,
                         pool=pool.value, clip_grad=clip_grad, workers=workers_or_default(workers), out=str(out),
                         resume=resume)
    _report_top1(run_finetune(_inputs(backbone, data, val_fraction, arch, device, seed, limit), cfg, RichReporter()))


@fail_cleanly
def segment(backbone: Backbone,
            data: Annotated[str, typer.Option(help="CamVid folder or npz pack, or a folder with classes.txt and "
                                                   "SPLIT/images + SPLIT/masks.")],
            eval_split: Annotated[str, typer.Option(
                help="Split of --data to evaluate, e.g. val or test (CamVid): the data's split names.")] = "val",
            ignore_index: Annotated[int | None, typer.Option(
                help="Label excluded from loss and metrics; default: the data's void label (CamVid: 11), else 255.")]
            = None,
            epochs: int = 50, warmup_epochs: Annotated[float | None, typer.Option(help=warmup_help(2))] = None,
            batch_size: int = 8,
            blr: Annotated[float, typer.Option(
                help="Base lr; lr = blr x effective batch / 256 (AdamW, at the decoder; encoder blocks get "
                "layer-decayed fractions).")] = 3.2e-3,
            layer_decay: float = 0.75, weight_decay: float = 0.05,
            crop_size: Annotated[int, typer.Option(
                help="Training crop side in pixels (a multiple of 32 and the patch).")] = 256,
            dice: Annotated[bool, typer.Option("--dice", help="Add smp's Dice loss to cross-entropy.")] = False,
            previews: Annotated[int, typer.Option(help="Validation images drawn in predictions.png.")] = 4,
            limit: Limit = None, arch: Arch = None, device: Device = "auto", workers: Workers = None, seed: Seed = 0,
            out: Out = Path("runs/segment"), resume: Resume = False) -> None:
    """Semantic segmentation with smp's DPT on the backbone: class-mean mIoU, per-class IoU, previews.

    Multi-GPU: [bold]torchrun --nproc-per-node=8 -m mimzoo segment BACKBONE ...[/bold]
    """
    from mimzoo.engine.downstream import run_segment
    from mimzoo.engine.segment import SegmentConfig
    from mimzoo_cli.progress import RichReporter

    cfg = SegmentConfig(epochs=epochs, warmup_epochs=warmup_epochs, batch_size=batch_size, blr=blr,
                        weight_decay=weight_decay, layer_decay=layer_decay, crop_size=crop_size,
                        ignore_index=ignore_index, dice=dice, workers=workers_or_default(workers), out=str(out),
                        resume=resume, previews=previews)
    results = run_segment(_inputs(backbone, data, None, arch, device, seed, limit), cfg, eval_split, RichReporter())
    if is_main_process():
        console.print(f"{results['split']} mIoU {results['miou']:.2f} (epoch {results['epoch']}, the last), pixel "
                      f"accuracy {results['pixel_accuracy']:.2f}", highlight=False)
