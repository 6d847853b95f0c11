"""Pretraining input pipeline throughput, data only or end to end, for ``--data-device cpu`` and ``gpu``.

Data only: batches of views from mimzoo's pipeline (``mimzoo.data.pipeline``, as ``mimzoo pretrain`` builds it),
ending on the training device, and optionally the standard torchvision MAE pipeline (``--peer``: PIL decode,
RandomResizedCrop bicubic, flip, ToTensor, Normalize in the workers). End to end (``--method`` and ``--arch``): every
batch also goes through a bf16 training step of that method, and the same model's model-only rate on a synthetic
batch is measured in the same run, so the JSON gives end-to-end / model-only directly. For ``gpu`` the first batch
is also compared with the PIL path's views of the same keys (mean absolute difference in 0-255 levels).

    python benchmarks/data_throughput.py --data benchmarks/jpegs --data-device cpu,gpu --workers 16 --batch 256
    python benchmarks/data_throughput.py --data ../shared/data/cifar10_jpeg_q75.npz --method mae \\
        --arch vit_tiny_patch4_32 --batch 1024 --data-device cpu,gpu --compile
    python benchmarks/data_throughput.py --data builtin --size 32 --batch 16 --batches 2 --workers 0  # CPU smoke
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from results_log import emit  # benchmarks/, first on the path of a script run from there
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from mimzoo.archs import get_arch
from mimzoo.data.loader import IMAGENET_MEAN, IMAGENET_STD, ViewDataset, normalize
from mimzoo.data.pipeline import view_pipeline
from mimzoo.data.sources import open_source
from mimzoo.data.transforms import make_view
from mimzoo.engine.config import PretrainConfig
from mimzoo.engine.pretrain import pretrain_optimizer
from mimzoo.methods import get_method, resolve_defaults, view_size

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid_360x480_jpeg95.npz"


class TorchvisionViews(Dataset):
    """The peer: the pipeline of MAE's main_pretrain.py, on the same decoded images."""

    def __init__(self, source, size: int) -> None:
        self.source = source
        self.transform = transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.source.load(index))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(pipeline, count: int):
    """``count`` batches, epoch after epoch (the workers persist)."""
    epoch, seen = 0, 0
    while True:
        pipeline.sampler.set_epoch(epoch)
        for batch in pipeline.loader:
            yield batch
            seen += 1
            if seen == count:
                return
        epoch += 1


class Trainer:
    """One method's bf16 training step (forward, backward, AdamW: fused on a GPU), as ``mimzoo pretrain`` takes
    it."""

    def __init__(self, method: str, arch_name: str, device: torch.device, compile_: bool) -> None:
        self.cfg = resolve_defaults(PretrainConfig(method=method, arch=arch_name))
        spec, arch = get_method(method), get_arch(arch_name)
        self.size, self.crop, self.device = view_size(arch, self.cfg), self.cfg.crop, device
        self.model = spec.build(arch, self.cfg).to(device)
        self.forward = torch.compile(self.model) if compile_ else self.model
        self.optimizer = pretrain_optimizer(self.model, self.cfg, 1e-4, device)

    def step(self, images: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = self.forward(images).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def model_only(self, batch: int, steps: int) -> float:
        images = torch.randn(batch, 3, self.size, self.size, device=self.device)
        for _ in range(2):
            self.step(images)
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step(images)
        synchronize(self.device)
        return batch * steps / (time.perf_counter() - start)


def timed(stream, warmup: int, count: int, take, device: torch.device) -> float:
    """img/s over ``count`` batches of ``stream`` (``take`` each: it returns its image count) after ``warmup``
    untimed ones of the same iterator: ``warmup`` >= the number of workers, so the timing starts once the batches
    they prefetched while starting are used up, in their steady state."""
    stream = iter(stream)
    for _ in range(warmup):
        take(next(stream))
    synchronize(device)
    start, seen = time.perf_counter(), 0
    for _ in range(count):
        seen += take(next(stream))
    synchronize(device)
    return seen / (time.perf_counter() - start)


def measure(pipeline, device: torch.device, warmup: int, count: int, trainer: Trainer | None) -> float:
    """mimzoo's pipeline, data only or with a training step on every batch (compiled and warm after warm-up)."""
    def take(batch) -> int:
        images = normalize(batch[0], device)  # the copy and the normalisation belong to the pipeline
        if trainer:
            trainer.step(images)
        return images.shape[0]

    return timed(batches(pipeline, warmup + count), warmup, count, take, device)


def endless(loader):
    while True:
        yield from loader


def difference_from_pil(pipeline, source, view, device: torch.device) -> float:
    """Mean |device view - PIL view| in 0-255 levels over the first batch of epoch 0."""
    pipeline.sampler.set_epoch(0)
    keys = list(pipeline.sampler)[: pipeline.loader.loader.batch_size]
    images, _ = next(iter(pipeline.loader))
    pil = ViewDataset(source, view, seed=0)
    reference = torch.stack([pil[key][0] for key in keys]).to(device)
    return round((images.int() - reference.int()).abs().float().mean().item(), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder, PACK.npz[:split] or builtin")
    parser.add_argument("--data-device", default="cpu,gpu", help="comma-separated: cpu, gpu")
    parser.add_argument("--crop", default="rrc", help="view without --method: rrc or src")
    parser.add_argument("--size", type=int, default=224, help="view size without --method")
    parser.add_argument("--method", help="end to end: also run this method's training step on every batch")
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--compile", action="store_true", help="end to end: torch.compile the model")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--batches", type=int, default=64, help="timed batches, after max(2, --workers) untimed")
    parser.add_argument("--peer", action="store_true", help="also time torchvision's MAE pipeline (data only)")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    source = open_source(args.data)
    trainer = Trainer(args.method, args.arch, device, args.compile) if args.method else None
    size, crop = (trainer.size, trainer.crop) if trainer else (args.size, args.crop)
    view = make_view(crop, size)
    # a timed run longer than an epoch includes the loaders' restarts, as training does once an epoch
    common = {"data": args.data, "images": len(source), "batches_per_epoch": len(source) // args.batch,
              "crop": crop, "size": size, "batch": args.batch, "workers": args.workers, "device": name}
    if trainer:
        common.update(method=args.method, arch=args.arch, compile=args.compile)
        model_only = trainer.model_only(args.batch, args.batches)
        emit({**common, "impl": "model-only", "img_per_s": round(model_only, 1)}, args.out)
    warmup = max(2, args.workers)
    for data_device in args.data_device.split(","):
        pipeline = view_pipeline(source, view, 0, data_device, device, args.batch, args.workers)
        record = {**common, "impl": f"mimzoo --data-device {data_device}",
                  "img_per_s": round(measure(pipeline, device, warmup, args.batches, trainer), 1)}
        if data_device == "gpu":
            record["resident"] = pipeline.loader.views.resident is not None
            record["mean_abs_diff_vs_pil"] = difference_from_pil(pipeline, source, view, device)
        if trainer:
            record["end_to_end_over_model_only"] = round(record["img_per_s"] / model_only, 3)
        emit(record, args.out)
        del pipeline
    if args.peer:
        loader = DataLoader(TorchvisionViews(source, size), args.batch, shuffle=True, num_workers=args.workers,
                            drop_last=True, persistent_workers=args.workers > 0, pin_memory=device.type == "cuda")
        rate = timed(endless(loader), warmup, args.batches,
                     lambda images: images.to(device, non_blocking=True).shape[0], device)
        emit({**common, "impl": "torchvision-mae (data only)", "img_per_s": round(rate, 1)}, args.out)


if __name__ == "__main__":
    main()
