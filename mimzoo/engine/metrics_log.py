"""A run's metrics log, ``RUN/metrics.jsonl``: one JSON line per log step, appended by rank 0."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mimzoo.engine.atomic import atomic_path

METRICS = "metrics.jsonl"


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path, up_to_step: float = math.inf) -> list[dict[str, Any]]:
    """The records logged at or before ``up_to_step`` (none if there is no log); a line cut short by a kill (or
    anything else that is not a metrics record) is skipped."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # not UTF-8 JSON
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step", 0), int | float):
            continue
        if record.get("step", math.inf) <= up_to_step:
            records.append(record)
    return records


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep the records up to ``step`` (a checkpoint's; 0 for a new run): the later steps are logged again."""
    if (Path(run_dir) / METRICS).is_file():
        kept = read_metrics(run_dir, step)
        with atomic_path(Path(run_dir) / METRICS) as tmp:
            tmp.write_text("".join(json.dumps(record) + "\n" for record in kept))
