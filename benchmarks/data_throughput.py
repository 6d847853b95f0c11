"""Pretraining input pipeline throughput: mimzoo's loader against the standard torchvision MAE pipeline.

Both decode the same JPEG bytes (an npz pack, default the CamVid frames of ../shared/data) with PIL in DataLoader
workers and make RandomResizedCrop(0.2, 1) bicubic + flip views. mimzoo's crops and resizes in one PIL call and
hands over uint8 (normalised later on the device); the peer runs torchvision's RandomResizedCrop, flip, ToTensor
and Normalize per image and hands over float32. One JSON line per implementation, then the ratio.

    python benchmarks/data_throughput.py --workers 2 --images 512
    python benchmarks/data_throughput.py --pack ../shared/data/camvid_360x480_jpeg95.npz --workers 16 --batch 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from mimzoo.data.loader import IMAGENET_MEAN, IMAGENET_STD, ResumableSampler, ViewDataset, make_loader
from mimzoo.data.sources import NpzPackSource
from mimzoo.data.transforms import RandomResizedCropFlip

DEFAULT_PACK = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid_360x480_jpeg95.npz"


class TorchvisionViews(Dataset):
    """The peer: the pipeline of MAE's main_pretrain.py, on the same decoded images."""

    def __init__(self, source: NpzPackSource, size: int) -> None:
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


def images_per_second(loader: DataLoader, epochs: int) -> float:
    """Images per second over ``epochs`` passes, after one untimed batch that starts the (persistent) workers."""
    next(iter(loader))
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            seen += (batch[0] if isinstance(batch, list) else batch).shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, default=DEFAULT_PACK)
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=512, help="images per timed epoch")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="timed passes over the images")
    args = parser.parse_args()
    source = NpzPackSource(args.pack, args.split)
    count = min(args.images, len(source))

    views = ViewDataset(source, RandomResizedCropFlip(args.size), seed=0)
    sampler = ResumableSampler(Subset(views, range(count)), 1, 0, seed=0)
    ours = make_loader(views, sampler, args.batch, args.workers, pin_memory=False)
    peer = DataLoader(Subset(TorchvisionViews(source, args.size), range(count)), args.batch, shuffle=True,
                      num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0)
    results = {}
    for name, loader in (("mimzoo", ours), ("torchvision-mae", peer)):
        results[name] = images_per_second(loader, args.epochs)
        print(json.dumps({"impl": name, "pack": args.pack.name, "images": count, "size": args.size,
                          "batch": args.batch, "workers": args.workers, "img_per_s": round(results[name], 1)}))
    print(json.dumps({"mimzoo_vs_torchvision": round(results["mimzoo"] / results["torchvision-mae"], 3)}))


if __name__ == "__main__":
    main()
