"""Pretraining configuration: one plain dataclass, saved as JSON in the run folder and in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from mimzoo.engine.defaults import default_workers
from mimzoo.errors import check_settings, in_range, in_range_if_set, one_of, valid_seed

# the learning-rate options (blr, lr) stop above this: such values only diverge, and usually are a typo
MAX_LR = 10.0


@dataclass
class PretrainConfig:
    """Defaults are MAE's recipe (methods.md section 1); ``DEMO`` is what ``mimzoo pretrain --demo`` changes."""

    method: str = "mae"
    arch: str = "vit_base_patch16_224"
    data: str = "builtin"
    limit: int | None = None  # a trial on this many images of --data (a seeded subset, the same every time)
    out: str | None = None  # None = runs/METHOD
    epochs: int = 400
    warmup_epochs: float | None = None  # None = the method's recipe, at most a quarter of the epochs (defaults.py)
    batch_size: int = 64  # per process; effective batch = batch_size x accum x world size
    accum: int = 1
    blr: float | None = None  # lr = blr x effective batch / 256; None = the method's reference value, filled in
    min_lr: float | None = None  # end of the cosine; None = the method's reference value, filled in
    weight_decay: float = 0.05
    # parameter-name patterns kept out of weight decay besides 1-D parameters and biases; None = the method's
    # reference rule, filled in (not a CLI option: config.json records what ran)
    no_weight_decay: list[str] | None = None
    clip_grad: float | None = None
    mask_ratio: float | None = None  # None = 0.75, or for misalign the reference's for the degradation
    crop: str | None = None  # data view: rrc | src; None = the method's default
    target: str | None = None  # reconstruction target: pixel | lowpass | hog (localmim); None = the method's default
    lowpass_radius: float | None = None  # None = 40 px at 224, scaled with the image size
    localmim_scales: list[float] | None = None  # fine to coarse; None = those of 4,2,1,0.5 that fit arch/target
    hog_bins: int | None = None  # localmim --target hog: orientation bins; None = 9 (the paper's; ViT-L: 18)
    hog_bias: bool = False  # localmim --target hog: the reference's --hog_bias (a frozen random Sobel bias)
    # MFF's fusion of encoder levels feeding the decoder; None = the method's (mff: on), filled in
    fusion: bool | None = None
    mff_layers: list[int] | None = None  # the fused blocks (0-based), with fusion; None = the arch's default, filled in
    mask_unit: int = 1  # mask K x K blocks of patches (LSMAE); 1 = per patch, as MAE
    # what the encoder's input goes through (the clean image stays the target): distort | blur | decolor, and for
    # misalign also zoom-in | zoom-out; None = the method's (misalign: zoom-in; the others: none)
    degradation: str | None = None
    norm_pix_loss: bool = True
    init_from: str | None = None  # a backbone spec to start from (continued pretraining); a resume ignores it
    init_weights: dict[str, str] | None = None  # filled in: what init_from loaded (file, sha256, part)
    seed: int = 0
    workers: int = field(default_factory=default_workers)
    device: str = "auto"
    data_device: str = "cpu"  # where views are decoded and resampled: cpu (PIL in workers) | gpu (the device)
    compile: bool = False
    log_every: int = 10  # optimizer steps between metrics lines
    # optimizer steps between checkpoints, and one at the end and at a stop: a ViT-B checkpoint is 1.3 GB, 5 s to
    # write here, and CIFAR-10's epochs last 3 s on an H200, so neither a short interval nor one per epoch
    ckpt_every: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in values.items() if k in known})
        if "fusion" not in values:  # a config from before --fusion: only mff fused, and it recorded its blocks
            cfg.fusion = cfg.mff_layers is not None
        return cfg

    def validate(self) -> None:
        check_settings([
            (self.data != "", "--data is empty; pass an image folder, PACK.npz[:split] or builtin"),
            (self.init_from != "", "--init-from is empty; name a backbone or leave the option out"),
            in_range("--epochs", self.epochs, 1),
            valid_seed(self.seed),
            in_range_if_set("--limit", self.limit, 1),
            in_range("--warmup-epochs", self.warmup_epochs, 0, self.epochs),
            in_range("--batch-size", self.batch_size, 1),
            in_range("--accum", self.accum, 1),
            in_range("--mask-ratio", self.mask_ratio, 0, 1, high_open=True),
            (self.mask_ratio > 0 or self.method == "misalign",
             f"--mask-ratio 0 leaves {self.method} nothing to reconstruct; only misalign trains unmasked"),
            (self.localmim_scales is None or self.method == "localmim",
             "--localmim-scales applies to --method localmim only"),
            ((self.hog_bins is None and not self.hog_bias) or (self.method, self.target) == ("localmim", "hog"),
             "--hog-bins and --hog-bias apply to --method localmim with --target hog only"),
            (self.hog_bins is None or self.hog_bins >= 2,
             "--hog-bins must be 2 or more (the paper's: 9, or 18 for ViT-L)"),
            in_range("--blr", self.blr, 0, MAX_LR, low_open=True),
            in_range("--min-lr", self.min_lr, 0, MAX_LR),
            in_range("--weight-decay", self.weight_decay, 0),
            in_range_if_set("--clip-grad", self.clip_grad, 0, low_open=True),
            in_range("--workers", self.workers, 0),
            one_of("--data-device", self.data_device, ("cpu", "gpu")),
            in_range("--log-every", self.log_every, 1),
            in_range("--ckpt-every", self.ckpt_every, 1),
        ])


def default_out(method: str) -> str:
    return f"runs/{method}"


# `mimzoo pretrain --demo`: MAE on the built-in CIFAR-10 sample with a tiny ViT, a few CPU minutes.
DEMO = dict(arch="vit_tiny_patch4_32", data="builtin", out="runs/demo", epochs=10, warmup_epochs=1,
            batch_size=64, blr=1.5e-3)
