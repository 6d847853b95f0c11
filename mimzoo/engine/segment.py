"""Semantic segmentation with segmentation-models-pytorch's DPT on a plain-ViT backbone.

DPT is the only smp decoder that takes a plain ViT (ecosystem.md section 3). The backbone's weights are loaded
strictly into DPT's timm encoder (built with ``dynamic_img_size``), the encoder gets layer-wise lr decay through
timm's param groups, and training runs in the shared supervised loop (bf16, DDP, resume). Evaluation is at full
resolution, each image padded to a size DPT accepts; padding is ignored by the metrics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import segmentation_models_pytorch as smp
import torch
from PIL import Image
from timm.models import get_model_args
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_layer_decay
from torch import nn

from mimzoo.data.loader import SkipReportingLoader
from mimzoo.data.segmentation import SegData, SegDataset, check_split
from mimzoo.engine.defaults import default_workers, resolve_warmup
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.features import backbone_data_config
from mimzoo.engine.report import Reporter
from mimzoo.engine.seg_metrics import SegMeter
from mimzoo.engine.supervised import LoopConfig, SupervisedLoop
from mimzoo.errors import MimzooError

DPT_STRIDE = 32  # DPT's coarsest level is 1/32 of the input
DEFAULT_IGNORE = 255


@dataclass
class SegmentConfig:
    epochs: int = 50
    warmup_epochs: float | None = None  # None = RECIPE_WARMUP, at most a quarter of the epochs
    batch_size: int = 8  # per process
    lr: float = 1e-4  # AdamW, at the decoder; encoder blocks get layer-decayed fractions of it
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    crop: int = 256
    ignore_index: int | None = None  # None: the data's void label (CamVid: 11), else DEFAULT_IGNORE
    dice: bool = False
    workers: int = field(default_factory=default_workers)
    out: str = "runs/segment"
    resume: bool = False
    previews: int = 4
    RECIPE_WARMUP: ClassVar[int] = 2


def input_multiple(backbone: VisionTransformer) -> int:
    """Image sides DPT accepts: multiples of both the patch size and DPT's 1/32 level."""
    return math.lcm(DPT_STRIDE, backbone.patch_embed.patch_size[0])


def build_dpt(backbone: VisionTransformer, num_classes: int) -> smp.DPT:
    """smp DPT whose timm encoder holds exactly the backbone's weights (strict load)."""
    # smp sets in_chans itself and takes `depth` as its own argument (the number of DPT levels)
    args = {k: v for k, v in get_model_args(backbone).items() if k not in ("num_classes", "global_pool", "in_chans")}
    if "depth" in args:
        raise MimzooError("smp's DPT cannot build a ViT with a non-registry depth; use a registry-depth backbone")
    model = smp.DPT(encoder_name=f"tu-{backbone.pretrained_cfg['architecture']}", encoder_weights=None,
                    classes=num_classes, num_classes=0, dynamic_img_size=True, **args)
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
    def evaluate(model: nn.Module, loader: SkipReportingLoader, ctx: DistContext) -> dict[str, Any]:
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
            reporter: Reporter) -> dict[str, Any]:
    """Train DPT on ``data``; returns the results (mIoU, per-class IoU, pixel accuracy), also in OUT."""
    cfg = replace(cfg, warmup_epochs=resolve_warmup(cfg.warmup_epochs, cfg.RECIPE_WARMUP, cfg.epochs))
    num_classes, multiple = len(data.classes), input_multiple(backbone)
    if cfg.crop % multiple:
        raise MimzooError(f"--crop {cfg.crop} must be a multiple of {multiple} (patch size and DPT's 1/32 level); "
                          f"use --crop {max(multiple, cfg.crop - cfg.crop % multiple)}")
    ignore = next(i for i in (cfg.ignore_index, data.void_label, DEFAULT_IGNORE) if i is not None)
    check_split(data.train, num_classes, ignore, "train")
    check_split(data.val, num_classes, ignore, data.val_name)
    model = build_dpt(backbone, num_classes).to(ctx.device)
    lr = cfg.lr
    optimizer = torch.optim.AdamW(layer_decay_groups(model, cfg), lr=lr)
    norm = backbone_data_config(backbone)
    train_set = SegDataset(data.train, norm["mean"], norm["std"], ignore, multiple, crop=cfg.crop)
    val_set = SegDataset(data.val, norm["mean"], norm["std"], ignore, multiple)
    reporter.message(f"segment (DPT): {len(data.train)} train / {len(data.val)} {data.val_name} images, "
                     f"{num_classes} classes, ignore index {ignore}, crop {cfg.crop}, lr {lr:.3g}, "
                     f"layer decay {cfg.layer_decay}")
    loop = SupervisedLoop(
        model, optimizer, train_set, val_set, SegLoss(ignore, cfg.dice),
        LoopConfig(cfg.epochs, cfg.warmup_epochs, cfg.batch_size, lr, cfg.min_lr, cfg.workers, Path(cfg.out),
                   cfg.resume, eval_batch_size=1),
        ctx, reporter, {**asdict(cfg), "ignore_index": ignore, "classes": data.classes},
        evaluator=seg_evaluator(num_classes, ignore), headline="miou",
    )
    results = loop.run("segment")
    if ctx.is_main:
        model.save_pretrained(Path(cfg.out) / "model", metrics={"miou": results["last_miou"]},
                              dataset=data.val_name)
        save_previews(model, val_set, num_classes, cfg.previews, Path(cfg.out) / "predictions.png", ctx.device)
    return results


def palette(num_classes: int) -> np.ndarray:
    """A fixed colour per class (evenly spaced hues); index ``num_classes`` (ignored pixels) is black."""
    hues = np.arange(num_classes) / max(1, num_classes)
    colours = [Image.new("HSV", (1, 1), (int(255 * h), 200, 230)).convert("RGB").getpixel((0, 0)) for h in hues]
    return np.array([*colours, (0, 0, 0)], dtype=np.uint8)


@torch.no_grad()
def save_previews(model: nn.Module, dataset: SegDataset, num_classes: int, count: int, path: Path,
                  device: torch.device) -> None:
    """A PNG with one row per validation image: image | ground truth | prediction (black: ignored)."""
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
        rows.append(np.concatenate([rgb, colours[truth.numpy()], colours[prediction.numpy()]], axis=1))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
