"""What a zoo build on a borrowed GPU sends back, and how it gets to the next lease (``benchmarks/zoo_session.sh``).

A lease keeps nothing; its files come back as at most 8 of 16 MiB each (64 MiB in all), and at most 64 MiB travel
to it. An entry's pretraining and its fine-tunes do not fit one 15-minute lease together, so an entry is built over
several, and each call sends back:

- ``zoo-NAME.tar.gz``: every stage record and the small files (json, jsonl, md, png) of ROOT, except those of
  stages not done: their checkpoints are too large to travel, so the next lease runs them again from the start
  (their records travel: the seconds they took count towards the entry's minutes). Commit these.
- ``weights-NAME.tar.NN`` and ``weights-NAME.sha256``: the encoders (``export/model.safetensors``) of ROOT that did
  not come with the tree (``carried``: listed once per machine, before its first build), cut into parts that come
  back, and their checksums. Every call sends them all again, so an encoder a call could not send (a kill, no
  room) comes with the next. They stay here under ``.zoo/`` (ignored by git) and travel to the lease that evaluates
  them (carry the one export folder that lease needs: an encoder is 22 MB, the compressed CIFAR-10 pack 18 MB).

``receive`` unpacks into a folder beside each destination and moves the files into place only once everything
unpacked and every encoder matches its checksum: a part that did not come back changes nothing here.

    python benchmarks/zoo_carry.py known .zoo > .zoo/carried.txt                      # there, once per machine
    python benchmarks/zoo_carry.py send .zoo "$OUT" NAME --carried .zoo/carried.txt   # there, after each build
    python benchmarks/zoo_carry.py receive FILES_AT benchmarks/results/zoo .zoo       # here, from a call's files
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tarfile
from contextlib import contextmanager
from pathlib import Path

from mimzoo.engine.init_from import sha256_of
from mimzoo.engine.zoo_build import STAGES, read_stages
from mimzoo.hub.layout import WEIGHTS

SMALL = (".json", ".jsonl", ".md", ".png")
PART_BYTES = 15 * 2**20  # under the 16 MiB a returned file may hold
RETURNED_BYTES = 60 * 2**20  # of the 64 MiB that come back in all, some left for the log
MAX_PARTS = 100  # two-digit part numbers


def encoders(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in root.rglob(f"export/{WEIGHTS}"))


def small_files(root: Path) -> list[Path]:
    """ROOT's small files, less those of the stages not done (their folder is ROOT/KEY)."""
    unfinished = [root / key for key, stage in read_stages(root).items() if not stage["done"]]
    return sorted(path.relative_to(root) for path in root.rglob("*")
                  if path.suffix in SMALL and path.is_file()
                  and (path.is_relative_to(root / STAGES) or not any(path.is_relative_to(u) for u in unfinished)))


def send(root: Path, out: Path, name: str, carried: Path | None, part_bytes: int = PART_BYTES) -> None:
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"zoo-{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        files = small_files(root)
        for path in files:
            tar.add(root / path, path.as_posix())
    print(f"{archive.name}: {len(files)} small files", file=sys.stderr)
    came = set(carried.read_text().split()) if carried is not None else set()
    buffer, sent, room = io.BytesIO(), [], RETURNED_BYTES - archive.stat().st_size
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in (p for p in encoders(root) if p.as_posix() not in came):
            size = (root / path).stat().st_size
            if size > room:  # the device tool would drop every file past its limits, not only this one
                print(f"{path} ({size:,} bytes) does not fit what comes back: build one seed a call", file=sys.stderr)
                continue
            tar.add(root / path, path.as_posix())
            sent.append(f"{sha256_of(root / path)}  {path.as_posix()}")
            room -= size
    if not sent:
        return
    data = buffer.getvalue()
    parts = range(0, len(data), part_bytes)
    if len(parts) > MAX_PARTS:
        raise SystemExit(f"{len(parts)} parts of {part_bytes:,} bytes: more than {MAX_PARTS}; use larger parts")
    for number, start in enumerate(parts):
        (out / f"weights-{name}.tar.{number:02d}").write_bytes(data[start:start + part_bytes])
    (out / f"weights-{name}.sha256").write_text(f"parts {len(parts)}\n" + "\n".join(sent) + "\n")
    print(f"weights-{name}: {len(parts)} parts of {', '.join(line.split()[1] for line in sent)}", file=sys.stderr)


@contextmanager
def staging(destination: Path):
    """A new folder beside ``destination`` whose files ``commit`` moves into it; removed whatever happens."""
    destination.mkdir(parents=True, exist_ok=True)
    folder = destination.parent / f".{destination.name}.receiving-{os.getpid()}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def commit(staged: Path, destination: Path) -> None:
    for path in sorted(p for p in staged.rglob("*") if p.is_file()):
        target = destination / path.relative_to(staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)


def unpack(archive: Path | io.BytesIO, folder: Path, name: str | None = None) -> None:
    name = name or archive.name
    try:
        with tarfile.open(archive) if isinstance(archive, Path) else tarfile.open(fileobj=archive) as tar:
            tar.extractall(folder, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:  # zlib's errors are OSErrors
        raise SystemExit(f"{name} does not unpack ({exc}); nothing was received, run the call again") from None


def receive(returned: Path, committed: Path, weights: Path) -> None:
    """Unpack a call's small files into ``committed`` and its encoders into ``weights`` (tar's "data" filter: no
    path leaves the folder named, no links, no devices), all or nothing."""
    if not hasattr(tarfile, "data_filter"):
        raise SystemExit("receiving needs tarfile's data filter (Python 3.10.12, 3.11.4 or newer)")
    manifests = sorted(returned.glob("weights-*.sha256"))
    with staging(committed) as small, staging(weights) as big:
        for archive in sorted(returned.glob("zoo-*.tar.gz")):
            unpack(archive, small)
        for manifest in manifests:
            name = manifest.name.removesuffix(".sha256")
            count, *lines = manifest.read_text().splitlines()
            parts = [returned / f"{name}.tar.{number:02d}" for number in range(int(count.split()[1]))]
            missing = [part.name for part in parts if not part.is_file()]
            if missing:
                raise SystemExit(f"{', '.join(missing)} did not come back; nothing was received, run the call again")
            unpack(io.BytesIO(b"".join(part.read_bytes() for part in parts)), big, name)
            for line in lines:
                digest, path = line.split("  ", 1)
                if not (big / path).is_file() or sha256_of(big / path) != digest:
                    raise SystemExit(f"{path} of {name} does not match its checksum; nothing was received, run the "
                                     "call again")
        commit(small, committed)
        commit(big, weights)
    print(f"received {len(manifests)} encoder set(s) into {weights} and the small files into {committed}",
          file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    knowing = commands.add_parser("known", help="there, before the machine's first build: ROOT's encoders")
    knowing.add_argument("root", type=Path)
    sending = commands.add_parser("send", help="there: pack ROOT's results and encoders into OUT")
    sending.add_argument("root", type=Path)
    sending.add_argument("out", type=Path)
    sending.add_argument("name", help="the entry (and seed) the files are named for")
    sending.add_argument("--carried", type=Path, help="the encoders that came with the tree (from `known`), which "
                                                      "are not sent back")
    receiving = commands.add_parser("receive", help="here: unpack a call's files")
    receiving.add_argument("returned", type=Path, help="the folder the call's files came back to")
    receiving.add_argument("committed", type=Path, help="where the small files go (benchmarks/results/zoo)")
    receiving.add_argument("weights", type=Path, help="where the encoders go (.zoo)")
    args = parser.parse_args()
    if args.command == "known":
        print("\n".join(path.as_posix() for path in encoders(args.root)))
    elif args.command == "send":
        send(args.root, args.out, args.name, args.carried)
    else:
        receive(args.returned, args.committed, args.weights)


if __name__ == "__main__":
    main()
