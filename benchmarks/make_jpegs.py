"""ImageNet-like JPEG files for the end-to-end benchmarks: ~500x375, quality 90, from ../shared/data.

The CamVid frames (480x360, every split of the pack) are resized to 500x375 and the demo photos to 500 px on the
long side, then saved as quality-90 JPEGs in a flat folder (default ``benchmarks/jpegs/``, ignored by git).

    python benchmarks/make_jpegs.py                   # about 1,000 files
    python benchmarks/make_jpegs.py --out /tmp/j --limit 64
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HERE = Path(__file__).resolve().parent


def frames(pack: Path):
    data = np.load(pack)
    for split in ("train", "val", "test"):
        buffer, offsets = data[f"{split}_jpeg"], data[f"{split}_offsets"]
        for i in range(len(offsets) - 1):
            yield f"camvid_{split}_{i:04d}", Image.open(io.BytesIO(buffer[offsets[i] : offsets[i + 1]].tobytes()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, default=SHARED / "camvid_360x480_jpeg95.npz")
    parser.add_argument("--photos", type=Path, default=SHARED / "demo_photos")
    parser.add_argument("--out", type=Path, default=HERE / "jpegs")
    parser.add_argument("--limit", type=int, default=None, help="at most this many CamVid frames")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    count = 0
    for count, (name, img) in enumerate(frames(args.pack), 1):
        img.convert("RGB").resize((500, 375), Image.BICUBIC).save(args.out / f"{name}.jpg", quality=90)
        if count == args.limit:
            break
    for path in sorted(args.photos.iterdir()):
        if path.suffix.lower() in (".jpg", ".png"):
            img = Image.open(path).convert("RGB")
            scale = 500 / max(img.size)
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
            img.save(args.out / f"photo_{path.stem}.jpg", quality=90)
            count += 1
    print(f"{count} JPEG files in {args.out}")


if __name__ == "__main__":
    main()
