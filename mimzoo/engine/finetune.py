"""End-to-end fine-tuning with MAE's recipe, built from timm's parts.

Layer-wise lr decay (timm's param groups; timm's scheduler multiplies each group's ``lr_scale`` in), drop path,
RandAugment + random erasing (timm's transform), Mixup/CutMix with label smoothing (timm's Mixup and
SoftTargetCrossEntropy), global average pooling with a fresh ``fc_norm`` (the encoder's final norm is dropped,
as MAE fine-tunes), warm-up + cosine, bf16, DDP and resume through the shared supervised loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import timm
from timm.data import Mixup, create_transform
from timm.layers import trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import get_model_args
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_layer_decay

from mimzoo.data.labeled import LabeledDataset, LabeledSplits
from mimzoo.engine.defaults import default_workers, resolve_warmup
from mimzoo.engine.distributed import DistContext
from mimzoo.engine.features import POOLS, backbone_data_config
from mimzoo.engine.optim import adamw
from mimzoo.engine.report import Reporter
from mimzoo.engine.supervised import LoopConfig, SupervisedLoop, fine_tuning_checks
from mimzoo.errors import MimzooError, check_settings, in_range, in_range_if_set, one_line, one_of


@dataclass
class FinetuneConfig:
    """Defaults are MAE's ViT-B recipe (methods.md section 1: FINETUNE.md)."""

    epochs: int = 100
    warmup_epochs: float | None = None  # None = RECIPE_WARMUP, at most a quarter of the epochs
    batch_size: int = 64  # per process
    blr: float = 5e-4  # lr = blr x effective batch / 256
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.65
    drop_path: float = 0.1
    smoothing: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    reprob: float = 0.25
    # MAE's RandAugment with magnitudes clipped at 9 (mmax9): at 10, timm's increasing posterize keeps 0 bits,
    # which Pillow >= 13 rejects with an error mid-epoch
    auto_augment: str = "rand-m9-mstd0.5-inc1-mmax9"
    pool: str = "avg"  # avg (+ fresh fc_norm, MAE) | token (cls after the pretrained norm)
    clip_grad: float | None = None
    workers: int = field(default_factory=default_workers)
    out: str = "runs/finetune"
    resume: bool = False
    RECIPE_WARMUP: ClassVar[int] = 5

    def validate(self) -> None:
        check_settings([
            *fine_tuning_checks(self),
            one_of("--pool", self.pool, POOLS),
            in_range("--drop-path", self.drop_path, 0, 1, high_open=True),
            in_range("--smoothing", self.smoothing, 0, 1, high_open=True),
            in_range("--mixup", self.mixup, 0),
            in_range("--cutmix", self.cutmix, 0),
            in_range("--reprob", self.reprob, 0, 1),
            in_range_if_set("--clip-grad", self.clip_grad, 0, low_open=True),
            (not (self.mixup > 0 or self.cutmix > 0) or self.batch_size % 2 == 0,
             f"Mixup/CutMix pair the images of a batch; use an even --batch-size, not {self.batch_size}"),
        ])
        if self.auto_augment:
            try:  # timm parses the spec when it builds the transform; a 1-pixel build is enough to check it
                create_transform(8, is_training=True, auto_augment=self.auto_augment)
            except (AssertionError, ValueError, KeyError, IndexError) as exc:
                raise MimzooError(f"--auto-augment {self.auto_augment!r} is not a timm augmentation spec "
                                  f"({one_line(exc) if str(exc) else 'unparsable'}); use e.g. "
                                  "rand-m9-mstd0.5-inc1-mmax9 (RandAugment), augmix-m5 or '' for none") from None


def build_classifier(backbone: VisionTransformer, num_classes: int, cfg: FinetuneConfig) -> VisionTransformer:
    """A timm ViT of the backbone's architecture with a classifier, loaded with the backbone's weights.

    Only the head (and, with avg pooling, a fresh ``fc_norm`` replacing the final ``norm``) may differ; any
    other mismatch means the weights do not fit the architecture.
    """
    pool = cfg.pool
    model_args = {**get_model_args(backbone), "num_classes": num_classes, "global_pool": pool}
    model = timm.create_model(backbone.pretrained_cfg["architecture"], pretrained=False,
                              drop_path_rate=cfg.drop_path, **model_args)
    weights, expected = backbone.state_dict(), model.state_dict()
    wrong_shape = sorted(k for k in weights if k in expected and weights[k].shape != expected[k].shape)
    if wrong_shape:
        raise MimzooError(f"the backbone's weights do not fit {backbone.pretrained_cfg['architecture']}: "
                          f"{len(wrong_shape)} tensors have other shapes (e.g. {wrong_shape[0]})")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    allowed_missing = {"head.weight", "head.bias"} | ({"fc_norm.weight", "fc_norm.bias"} if pool == "avg" else set())
    allowed_unexpected = {"norm.weight", "norm.bias"} if pool == "avg" else set()
    if set(missing) - allowed_missing or set(unexpected) - allowed_unexpected:
        raise MimzooError(f"the backbone's weights do not fit {backbone.pretrained_cfg['architecture']}: missing "
                          f"{sorted(set(missing) - allowed_missing)}, unexpected {sorted(set(unexpected))}")
    trunc_normal_(model.head.weight, std=2e-5)  # MAE's head init: start near the pretrained features
    return model


def finetune(backbone: VisionTransformer, splits: LabeledSplits, cfg: FinetuneConfig, ctx: DistContext,
             reporter: Reporter) -> dict[str, Any]:
    """Fine-tune; returns the results (``supervised.write_results``), also written to OUT/results.json."""
    cfg.validate()
    cfg = replace(cfg, warmup_epochs=resolve_warmup(cfg.warmup_epochs, cfg.RECIPE_WARMUP, cfg.epochs))
    num_classes = len(splits.classes)
    model = build_classifier(backbone, num_classes, cfg).to(ctx.device)
    groups = param_groups_layer_decay(model, cfg.weight_decay, no_weight_decay_list=model.no_weight_decay(),
                                      layer_decay=cfg.layer_decay)
    lr = cfg.blr * cfg.batch_size * ctx.world_size / 256
    optimizer = adamw(groups, lr, ctx.device)
    data_cfg = backbone_data_config(backbone)
    train_tf = create_transform(data_cfg["input_size"], is_training=True, auto_augment=cfg.auto_augment or None,
                                interpolation="bicubic", re_prob=cfg.reprob, re_mode="pixel", re_count=1,
                                mean=data_cfg["mean"], std=data_cfg["std"])
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                      num_classes=num_classes)
    criterion = SoftTargetCrossEntropy() if mixup else LabelSmoothingCrossEntropy(cfg.smoothing)
    reporter.message(f"fine-tune: {splits.summary()}, {num_classes} classes, "
                     f"lr = blr {cfg.blr:g} x {cfg.batch_size * ctx.world_size}/256 = {lr:.3g}, "
                     f"layer decay {cfg.layer_decay}")
    eval_tf = create_transform(**data_cfg, is_training=False)
    test = (splits.test_name, LabeledDataset(splits.test, eval_tf)) if splits.test is not None else None
    loop = SupervisedLoop(
        model, optimizer, LabeledDataset(splits.train, train_tf), LabeledDataset(splits.val, eval_tf), criterion,
        LoopConfig(cfg.epochs, cfg.warmup_epochs, cfg.batch_size, lr, cfg.min_lr, cfg.workers, Path(cfg.out),
                   cfg.resume, cfg.clip_grad),
        ctx, reporter, {**asdict(cfg), "lr": lr, "num_classes": num_classes}, batch_transform=mixup,
        val_name=splits.val_name, test=test, splits=splits.describe(),
    )
    return loop.run("fine-tune")
