"""An npz pack squeezed for the device tool's 64 MiB carry, and expanded back to the same arrays there.

Small JPEGs are mostly headers: each CIFAR-10 image of ../shared/data repeats the same 623 bytes of tables before
its ~300 bytes of scan, so the 56 MB pack holds 19 MB of pictures. ``squeeze`` keeps each distinct header once
(every byte up to the end of the first start-of-scan segment; an image it cannot parse keeps all its bytes as scan)
and compresses the other arrays; ``expand`` rebuilds every array bit for bit and checks each against the SHA-256
taken from the original, so a pack that travels this way trains exactly as the original does.

    python benchmarks/carry_pack.py squeeze ../shared/data/cifar10_jpeg_q75.npz .data/cifar10_jpeg_q75.carry.npz
    python benchmarks/carry_pack.py expand .data/cifar10_jpeg_q75.carry.npz .data/cifar10_jpeg_q75.npz   # there
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

SOS, SOI = 0xDA, b"\xff\xd8"
FORMAT_KEY = "carry_pack_format"
DIGESTS_KEY = "carry_pack_sha256"  # "key sha256" of every original array


def header_length(image: bytes) -> int:
    """Bytes up to the end of the first start-of-scan segment; 0 when the image is not a JPEG that parses."""
    if not image.startswith(SOI):
        return 0
    at = 2
    while at + 4 <= len(image) and image[at] == 0xFF:
        marker, length = image[at + 1], int.from_bytes(image[at + 2:at + 4], "big")
        at += 2 + length
        if marker == SOS:
            return at if at <= len(image) else 0
    return 0


def digest(array: np.ndarray) -> str:
    described = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(described + np.ascontiguousarray(array).tobytes()).hexdigest()


def squeeze(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {FORMAT_KEY: np.array(1), DIGESTS_KEY: np.array([f"{k} {digest(v)}" for k, v in arrays.items()])}
    for key, array in arrays.items():
        split = key.removesuffix("_jpeg")
        offsets = arrays.get(f"{split}_offsets")
        if not key.endswith("_jpeg") or offsets is None or offsets[0] != 0 or offsets[-1] != len(array):
            out[key] = array  # not images, or bytes between them: kept as they are
            continue
        data, headers, index, scans = array.tobytes(), {}, [], []
        for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
            cut = header_length(data[start:end])
            index.append(headers.setdefault(data[start:start + cut], len(headers)))
            scans.append(data[start + cut:end])
        out[f"{key}_headers"] = np.frombuffer(b"".join(headers), np.uint8)
        out[f"{key}_header_offsets"] = np.cumsum([0, *map(len, headers)]).astype(np.int64)
        out[f"{key}_header_index"] = np.array(index, np.int32)
        out[f"{key}_scans"] = np.frombuffer(b"".join(scans), np.uint8)
    return out


def expand(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if FORMAT_KEY not in packed:
        raise SystemExit("not a squeezed pack (no carry_pack_format key); make one with `carry_pack.py squeeze`")
    expected = dict(line.split(" ") for line in packed[DIGESTS_KEY].tolist())
    arrays = {}
    for key in expected:
        if key in packed:
            arrays[key] = packed[key]
            continue
        headers, bounds = packed[f"{key}_headers"].tobytes(), packed[f"{key}_header_offsets"].tolist()
        scans, offsets = packed[f"{key}_scans"].tobytes(), packed[f"{key.removesuffix('_jpeg')}_offsets"].tolist()
        pieces, at = [], 0
        for i, h in enumerate(packed[f"{key}_header_index"].tolist()):
            header = headers[bounds[h]:bounds[h + 1]]
            length = offsets[i + 1] - offsets[i] - len(header)
            pieces += [header, scans[at:at + length]]
            at += length
        arrays[key] = np.frombuffer(b"".join(pieces), np.uint8)
    wrong = [key for key, array in arrays.items() if digest(array) != expected[key]]
    if wrong:
        raise SystemExit(f"the expanded {', '.join(wrong)} differ from the original's; squeeze the pack again")
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("squeeze", "expand"))
    parser.add_argument("pack", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.out.suffix != ".npz":  # np.savez would add it, writing another file than the one named
        parser.error(f"{args.out} does not end in .npz; name the pack PATH.npz")
    if args.out.exists():
        parser.error(f"{args.out} exists; name a new file")
    with np.load(args.pack, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    result = squeeze(arrays) if args.action == "squeeze" else expand(arrays)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp.npz")  # a stopped write leaves no pack that looks whole
    try:
        (np.savez_compressed if args.action == "squeeze" else np.savez)(tmp, **result)
        tmp.rename(args.out)
    finally:
        tmp.unlink(missing_ok=True)
    done = "squeezed" if args.action == "squeeze" else "expanded"
    print(f"{done} {args.pack} ({args.pack.stat().st_size:,} bytes) into {args.out} "
          f"({args.out.stat().st_size:,} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
