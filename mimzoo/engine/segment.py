"""Semantic segmentation with segmentation-models-pytorch's DPT on a plain-ViT backbone.

DPT is the only smp decoder that takes a plain ViT (ecosystem.md section 3). The backbone's weights are loaded
strictly into DPT's timm encoder (built with ``dynamic_img_size``), the encoder gets layer-wise lr decay through
timm's param groups, and training runs in the shared supervised loop (bf16, DDP, resume). Evaluation is at full
resolution, each image padded to a size DPT accepts; padding is ignored by the metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import segmentation_models_pytorch as smp
import torch
from PIL import Image, ImageDraw
from timm.models import get_model_args
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_layer_decay
from torch import nn

from mimzoo.data.segmentation import TRAIN_SCALE, SegData, SegDataset, check_split
from mimzoo.engine.atomic import atomic_dir
from mimzoo.engine.defaults import default_workers, resolve_warmup
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.features import backbone_data_config
from mimzoo.engine.optim import adamw
from mimzoo.engine.outputs import card_is_ours, replaceable, writable_folder
from mimzoo.engine.report import Reporter
from mimzoo.engine.seg_metrics import SegMeter
from mimzoo.engine.supervised import LoopConfig, SupervisedLoop, fine_tuning_checks
from mimzoo.errors import MimzooError, check_settings, in_range, in_range_if_set
from mimzoo.hub.dpt_card import write_dpt_card
from mimzoo.hub.layout import CARD
from mimzoo.viz.draw import INK, figure_path, font, line_height, save

DPT_STRIDE = 32  # DPT's coarsest level is 1/32 of the input
DEFAULT_IGNORE = 255
MODEL_DIR, PREVIEWS = "model", "predictions.png"  # in OUT
MODEL_FILES = {"config.json", "model.safetensors", CARD}  # what smp's save_pretrained and mimzoo's card write


@dataclass
class SegmentConfig:
    epochs: int = 50
    warmup_epochs: float | None = None  # None = RECIPE_WARMUP, at most a quarter of the epochs
    batch_size: int = 8  # per process
    blr: float = 3.2e-3  # lr = blr x effective batch / 256 (1e-4 at batch 8): AdamW's at the decoder; encoder
    # blocks get layer-decayed fractions of it
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    crop_size: int = 256  # training crop side, pixels
    ignore_index: int | None = None  # None: the data's void label (CamVid: 11), else DEFAULT_IGNORE
    dice: bool = False
    workers: int = field(default_factory=default_workers)
    out: str = "runs/segment"
    resume: bool = False
    previews: int = 4
    RECIPE_WARMUP: ClassVar[int] = 2

    def validate(self) -> None:
        check_settings([
            *fine_tuning_checks(self),
            in_range("--crop-size", self.crop_size, 1),
            in_range_if_set("--ignore-index", self.ignore_index, 0),
            in_range("--previews", self.previews, 0),
        ])


def input_multiple(backbone: VisionTransformer) -> int:
    """Image sides DPT accepts: multiples of both the patch size and DPT's 1/32 level."""
    return math.lcm(DPT_STRIDE, backbone.patch_embed.patch_size[0])


def decoder_channels(width: int) -> tuple[tuple[int, ...], int]:
    """DPT's reassemble channels and fusion width for an encoder of ``width``: DPT-Base's proportions (width / 8,
    / 4, / 2, x 1; exactly the paper's 96-192-384-768 for ViT-B) with fusion 256, or the width where it is smaller.
    smp's default, DPT-Large's 256-512-1024-1024, would give a ViT-T (5.5M) a 35M-parameter model."""
    return (width // 8, width // 4, width // 2, width), min(256, width)


def build_dpt(backbone: VisionTransformer, num_classes: int) -> smp.DPT:
    """smp DPT (decoder sized by ``decoder_channels``) whose timm encoder holds exactly the backbone's weights
    (strict load)."""
    # smp sets in_chans itself and takes `depth` as its own argument (the number of DPT levels)
    args = {k: v for k, v in get_model_args(backbone).items() if k not in ("num_classes", "global_pool", "in_chans")}
    if "depth" in args:
        raise MimzooError("smp's DPT cannot build a ViT with a non-registry depth; use a registry-depth backbone")
    intermediate, fusion = decoder_channels(backbone.num_features)
    model = smp.DPT(encoder_name=f"tu-{backbone.pretrained_cfg['architecture']}", encoder_weights=None,
                    classes=num_classes, decoder_intermediate_channels=intermediate,
                    decoder_fusion_channels=fusion, num_classes=0, dynamic_img_size=True, **args)
    try:
        model.encoder.model.load_state_dict(backbone.state_dict(), strict=True)
    except RuntimeError as exc:
        raise MimzooError(f"the backbone does not load into DPT's encoder: {str(exc).splitlines()[0]}") from None
    return model


class SegLoss(nn.Module):
    """Cross-entropy with an ignore index, plus smp's multiclass Dice when asked."""

    def __init__(self, ignore_index: int, dice: bool) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(ignore_index=ignore_index)
        self.dice = smp.losses.DiceLoss("multiclass", ignore_index=ignore_index) if dice else None

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        loss = self.ce(logits.float(), mask)
        return loss + self.dice(logits.float(), mask) if self.dice is not None else loss


def seg_evaluator(num_classes: int, ignore_index: int):
    @torch.no_grad()
    def evaluate(model: nn.Module, loader: Iterable[tuple], ctx: DistContext) -> dict[str, Any]:
        meter = SegMeter(num_classes, ignore_index)
        for images, masks in loader:
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.device.type == "cuda"):
                logits = model(images.to(ctx.device, non_blocking=True))
            meter.update(logits.argmax(1).cpu(), masks)
        if ctx.enabled:  # each rank scored a slice: sum the statistics
            stats = meter.stats.to(ctx.device)
            torch.distributed.all_reduce(stats)
            meter.stats = stats.cpu()
        return meter.compute()

    return evaluate


def layer_decay_groups(model: smp.DPT, cfg: SegmentConfig) -> list[dict[str, Any]]:
    """Encoder groups with timm's layer-decay ``lr_scale``; the decoder and head train at the full lr."""
    vit = model.encoder.model
    groups = param_groups_layer_decay(vit, cfg.weight_decay, no_weight_decay_list=vit.no_weight_decay(),
                                      layer_decay=cfg.layer_decay)
    encoder_ids = {id(p) for p in vit.parameters()}
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    return groups + [{"params": [p for p in rest if p.ndim > 1], "weight_decay": cfg.weight_decay},
                     {"params": [p for p in rest if p.ndim <= 1], "weight_decay": 0.0}]


def segment(backbone: VisionTransformer, data: SegData, cfg: SegmentConfig, ctx: DistContext,
            reporter: Reporter, backbone_name: str = "a ViT backbone", dataset: str = "data") -> dict[str, Any]:
    """Train DPT on ``data``; returns the results (the last epoch's mIoU, per-class IoU and pixel accuracy on the
    evaluation split), also in OUT. backbone_name, dataset: what the saved model's card calls them."""
    cfg.validate()
    cfg = replace(cfg, warmup_epochs=resolve_warmup(cfg.warmup_epochs, cfg.RECIPE_WARMUP, cfg.epochs))
    out = writable_folder(Path(cfg.out))
    replaceable(out / MODEL_DIR, _model_is_ours)
    if cfg.previews:
        figure_path(out / PREVIEWS)
    num_classes, multiple = len(data.classes), input_multiple(backbone)
    if cfg.crop_size % multiple:
        fixed = max(multiple, cfg.crop_size - cfg.crop_size % multiple)
        raise MimzooError(f"--crop-size {cfg.crop_size} must be a multiple of {multiple} (patch size and DPT's 1/32 "
                          f"level); use --crop-size {fixed}")
    ignore = next(i for i in (cfg.ignore_index, data.void_label, DEFAULT_IGNORE) if i is not None)
    short_side = check_split(data.train, num_classes, ignore, "train")
    largest = max(multiple, int(short_side * TRAIN_SCALE[1]) // multiple * multiple)  # the largest crop that fits
    if cfg.crop_size > largest:  # every crop would be partly padding, paid for in tokens
        raise MimzooError(f"--crop-size {cfg.crop_size} is larger than any training image becomes (short side at "
                          f"most {largest} px at the top random scale {TRAIN_SCALE[1]:g}); use --crop-size {largest} "
                          "or less")
    check_split(data.val, num_classes, ignore, data.val_name)
    model = build_dpt(backbone, num_classes).to(ctx.device)
    lr = cfg.blr * cfg.batch_size * ctx.world_size / 256
    optimizer = adamw(layer_decay_groups(model, cfg), lr, ctx.device)
    norm = backbone_data_config(backbone)
    train_set = SegDataset(data.train, norm["mean"], norm["std"], ignore, multiple, crop=cfg.crop_size)
    val_set = SegDataset(data.val, norm["mean"], norm["std"], ignore, multiple)
    reporter.message(f"segment (DPT): {len(data.train)} train / {len(data.val)} {data.val_name} images, "
                     f"{num_classes} classes, ignore index {ignore}, crop {cfg.crop_size}, "
                     f"lr = blr {cfg.blr:g} x {cfg.batch_size * ctx.world_size}/256 = {lr:.3g}, "
                     f"layer decay {cfg.layer_decay}")
    loop = SupervisedLoop(
        model, optimizer, train_set, val_set, SegLoss(ignore, cfg.dice),
        LoopConfig(cfg.epochs, cfg.warmup_epochs, cfg.batch_size, lr, cfg.min_lr, cfg.workers, Path(cfg.out),
                   cfg.resume, eval_batch_size=1),
        ctx, reporter, {**asdict(cfg), "lr": lr, "ignore_index": ignore, "classes": data.classes},
        evaluator=seg_evaluator(num_classes, ignore), headline="miou", val_name=data.val_name,
        splits={"train": {"name": "train", "images": len(data.train)},
                "val": {"name": data.val_name, "images": len(data.val)}},
    )
    results = loop.run("segment")
    if ctx.is_main:
        intermediate, fusion = decoder_channels(backbone.num_features)
        _save_model(model, out / MODEL_DIR, {
            "backbone": backbone_name, "architecture": backbone.pretrained_cfg["architecture"],
            "license": backbone.pretrained_cfg.get("license"), "dataset": dataset, "classes": data.classes,
            "mean": list(norm["mean"]), "std": list(norm["std"]), "multiple": multiple, "ignore_index": ignore,
            "params": f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}",
            "encoder_params": f"{sum(p.numel() for p in model.encoder.parameters()) / 1e6:.1f}",
            "intermediate": "-".join(map(str, intermediate)), "fusion": fusion}, results)
        save_previews(model, val_set, num_classes, cfg.previews, out / PREVIEWS, ctx.device, data.classes)
    return results


def _save_model(model: nn.Module, folder: Path, info: dict[str, Any], results: dict[str, Any]) -> None:
    """smp's ``save_pretrained`` with mimzoo's card (see :func:`write_dpt_card`), built aside and swapped in whole
    (smp writes in place, with mode 0600)."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        write_dpt_card(tmp, info, results)


def _model_is_ours(folder: Path) -> bool:
    """An empty folder, or a DPT an earlier segment run saved: smp's files and mimzoo's card, nothing else."""
    files = {p.name for p in folder.iterdir()} if folder.is_dir() else {folder.name}
    return not files or (files <= MODEL_FILES and CARD in files and card_is_ours(folder / CARD))


def palette(num_classes: int) -> np.ndarray:
    """A fixed colour per class (evenly spaced hues); index ``num_classes`` (ignored pixels) is black."""
    hues = np.arange(num_classes) / max(1, num_classes)
    colours = [Image.new("HSV", (1, 1), (int(255 * h), 200, 230)).convert("RGB").getpixel((0, 0)) for h in hues]
    return np.array([*colours, (0, 0, 0)], dtype=np.uint8)


PREVIEW_COLUMNS = ("image", "ground truth", "prediction")
PREVIEW_PAD, PREVIEW_MIN_COLUMN = 8, 110  # px; a column is at least as wide as its title


@torch.no_grad()
def save_previews(model: nn.Module, dataset: SegDataset, num_classes: int, count: int, path: Path,
                  device: torch.device, classes: list[str] | None = None) -> None:
    """A PNG with a titled column each for image | ground truth | prediction, one row per validation image, and a
    legend of the class colours (black: ignored)."""
    if count <= 0:
        return
    model.eval()
    colours = palette(num_classes)
    rows = []
    for i in range(min(count, len(dataset))):
        image, mask, _ = dataset[i]
        prediction = model(image[None].to(device)).argmax(1)[0].cpu()
        rgb = ((image * dataset.std + dataset.mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        truth = torch.where(mask == dataset.ignore_index, num_classes, mask)
        rows.append((rgb, colours[truth.numpy()], colours[prediction.numpy()]))
    names = [*(classes or [str(c) for c in range(num_classes)]), "ignored"]
    save(preview_figure(rows, names, colours), path)


def preview_figure(rows: list[tuple[np.ndarray, ...]], names: list[str], colours: np.ndarray) -> Image.Image:
    """Rows of (H, W, 3) panels under the column titles, then a legend swatch per name in ``colours``."""
    pad, lh = PREVIEW_PAD, line_height()
    column = max(PREVIEW_MIN_COLUMN, *(panel.shape[1] for row in rows for panel in row))
    width = len(PREVIEW_COLUMNS) * (column + pad) + pad
    entries = [(font().getlength(name) + 24, name, tuple(int(c) for c in colour))
               for name, colour in zip(names, colours, strict=True)]
    legend, x, y = [], pad, 0  # (x, line) of each entry, flowing into lines of the figure's width
    for entry_width, name, colour in entries:
        if x > pad and x + entry_width > width - pad:
            x, y = pad, y + 1
        legend.append((x, y, name, colour))
        x += entry_width + pad
    heights = [max(panel.shape[0] for panel in row) for row in rows]
    legend_top = pad + lh + sum(h + pad for h in heights)
    canvas = Image.new("RGB", (width, legend_top + (y + 1) * lh + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for col, title in enumerate(PREVIEW_COLUMNS):
        draw.text((pad + col * (column + pad), pad), title, fill=INK, font=font())
    top = pad + lh
    for row, height in zip(rows, heights, strict=True):
        for col, panel in enumerate(row):
            canvas.paste(Image.fromarray(panel), (pad + col * (column + pad), top))
        top += height + pad
    for x, line, name, colour in legend:
        y0 = legend_top + line * lh
        draw.rectangle((x, y0 + 2, x + 14, y0 + lh - 3), fill=colour, outline=INK)
        draw.text((x + 20, y0), name, fill=INK, font=font())
    return canvas
