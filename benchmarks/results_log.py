"""One JSON line per measurement, printed and, with ``--out``, appended to a file (the benchmarks' common output)."""

from __future__ import annotations

import json
from pathlib import Path


def emit(record: dict, out: Path | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        with out.open("a") as f:
            f.write(line + "\n")
