"""What a zoo build on a borrowed GPU sends back, and how it gets to the next lease (``benchmarks/zoo_session.sh``).

A lease keeps nothing; its files come back as at most 8 of 16 MiB each (64 MiB in all), and at most 64 MiB travel
to it. An entry's pretraining and its fine-tunes do not fit one 15-minute lease together, so an entry is built over
several, and each lease sends back:

- ``zoo-NAME.tar.gz``: every stage record and the small files (json, jsonl, md, png) of ROOT, except those of
  stages not done: their checkpoints are too large to travel, so the next lease runs them again from the start
  (their records travel: the seconds they took count towards the entry's minutes). Commit these.
- ``weights-NAME.tar.NN``: the encoders (``export/model.safetensors``) this call pretrained, cut into parts that
  come back. They stay here under ``.zoo/`` (ignored by git) and travel to the lease that evaluates them (carry
  the one export folder that lease needs: an encoder is 22 MB, the squeezed CIFAR-10 pack 18 MB).

    python benchmarks/zoo_carry.py send .zoo "$OUT" NAME --known .zoo-known.txt     # there (zoo_session.sh does)
    python benchmarks/zoo_carry.py receive FILES_AT benchmarks/results/zoo .zoo      # here, from the call's files
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

from mimzoo.engine.zoo_build import STAGES, read_stages
from mimzoo.hub.layout import WEIGHTS

SMALL = (".json", ".jsonl", ".md", ".png")
PART_BYTES = 15 * 2**20  # under the 16 MiB a returned file may hold
RETURNED_BYTES = 60 * 2**20  # of the 64 MiB that come back in all, some left for the log


def encoders(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in root.rglob(f"export/{WEIGHTS}"))


def small_files(root: Path) -> list[Path]:
    """ROOT's small files, less those of the stages not done (their folder is ROOT/KEY)."""
    unfinished = [root / key for key, stage in read_stages(root).items() if not stage["done"]]
    return sorted(path.relative_to(root) for path in root.rglob("*")
                  if path.suffix in SMALL and path.is_file()
                  and (path.is_relative_to(root / STAGES) or not any(path.is_relative_to(u) for u in unfinished)))


def send(root: Path, out: Path, name: str, known: Path | None, part_bytes: int = PART_BYTES) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / f"zoo-{name}.tar.gz", "w:gz") as tar:
        files = small_files(root)
        for path in files:
            tar.add(root / path, path.as_posix())
    print(f"zoo-{name}.tar.gz: {len(files)} small files", file=sys.stderr)
    before = set(known.read_text().split()) if known is not None and known.is_file() else set()
    new = [path for path in encoders(root) if path.as_posix() not in before]
    buffer, sent, room = io.BytesIO(), [], RETURNED_BYTES - (out / f"zoo-{name}.tar.gz").stat().st_size
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in new:
            size = (root / path).stat().st_size
            if size > room:  # the device tool would drop every file past its limits, not only this one
                print(f"{path} ({size:,} bytes) does not fit what comes back; build one seed a call", file=sys.stderr)
                continue
            tar.add(root / path, path.as_posix())
            sent.append(path)
            room -= size
    if sent:
        data = buffer.getvalue()
        for part, start in enumerate(range(0, len(data), part_bytes)):
            (out / f"weights-{name}.tar.{part:02d}").write_bytes(data[start:start + part_bytes])
        print(f"weights-{name}.tar.NN: {', '.join(map(str, sent))}", file=sys.stderr)


def receive(returned: Path, committed: Path, weights: Path) -> None:
    """Unpack the small files into ``committed`` and the encoders into ``weights`` (tar's "data" filter: no path
    leaves the folder named, no links, no devices)."""
    for archive in sorted(returned.glob("zoo-*.tar.gz")):
        with tarfile.open(archive) as tar:
            tar.extractall(committed, filter="data")
        print(f"{archive.name} -> {committed}", file=sys.stderr)
    parts: dict[str, list[Path]] = {}
    for part in sorted(returned.glob("weights-*.tar.[0-9][0-9]")):
        parts.setdefault(part.name[:-3], []).append(part)
    for name, pieces in parts.items():
        if [int(p.suffix[1:]) for p in pieces] != list(range(len(pieces))):
            raise SystemExit(f"parts of {name} are missing in {returned}; run the call again")
        with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in pieces))) as tar:
            tar.extractall(weights, filter="data")
            print(f"{name} -> {weights}: {', '.join(tar.getnames())}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sending = commands.add_parser("send", help="there: pack ROOT's results and new encoders into OUT")
    sending.add_argument("root", type=Path)
    sending.add_argument("out", type=Path)
    sending.add_argument("name", help="the entry (and seed) the files are named for")
    sending.add_argument("--known", type=Path, help="encoders present before the build (one ROOT-relative path a "
                                                    "line, from `zoo_carry.py known`), not sent again")
    knowing = commands.add_parser("known", help="there, before the build: list ROOT's encoders")
    knowing.add_argument("root", type=Path)
    receiving = commands.add_parser("receive", help="here: unpack a call's files")
    receiving.add_argument("returned", type=Path, help="the folder the call's files came back to")
    receiving.add_argument("committed", type=Path, help="where the small files go (benchmarks/results/zoo)")
    receiving.add_argument("weights", type=Path, help="where the encoders go (.zoo)")
    args = parser.parse_args()
    if args.command == "send":
        send(args.root, args.out, args.name, args.known)
    elif args.command == "known":
        print("\n".join(path.as_posix() for path in encoders(args.root)))
    else:
        receive(args.returned, args.committed, args.weights)


if __name__ == "__main__":
    main()
