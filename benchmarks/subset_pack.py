"""The first N training images of an npz pack (the ../shared/data format), as a pack of their own: what fits the
device tool's 64 MiB carry beside the JPEG folder, for throughput figures (not for training the zoo).

    python benchmarks/subset_pack.py ../shared/data/cifar10_jpeg_q75.npz .data/cifar10_train40k_jpeg_q75.npz \\
        --train 40000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pack", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, required=True, help="training images kept (the first N)")
    args = parser.parse_args()
    if args.out.suffix != ".npz":  # np.savez would add it, writing another file than the one named
        parser.error(f"{args.out} does not end in .npz; name the pack PATH.npz")
    if args.out.exists():
        parser.error(f"{args.out} exists; name a new file")
    data = np.load(args.pack)
    offsets = data["train_offsets"][: args.train + 1]
    kept = {"train_jpeg": data["train_jpeg"][: offsets[-1]], "train_offsets": offsets}
    if "train_labels" in data:
        kept["train_labels"] = data["train_labels"][: args.train]
    if "classes" in data:
        kept["classes"] = data["classes"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **kept)
    print(f"{len(offsets) - 1} training images of {args.pack} in {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
