"""The files of an export folder (which is also the layout of its Hub repo) and how to read them.

- ``config.json`` and ``model.safetensors``: the encoder as plain timm loads it (``timm.create_model('hf-hub:..')``)
- ``README.md``: the model card, generated from the two JSON files (never edited by hand)
- ``mimzoo.json``: the method, its config, the pretraining record and every measured result
- ``pretrainer.safetensors``: the whole pretraining model (encoder, decoder, mask token, ...)

Only the first two are required to use a folder as a backbone; the rest make it a mimzoo export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mimzoo.engine.checkpoint import CHECKPOINT
from mimzoo.engine.outputs import writable_folder
from mimzoo.errors import MimzooError, one_line

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
RECORD = "mimzoo.json"
PRETRAINER = "pretrainer.safetensors"
EXPORT_FILES = (CONFIG, WEIGHTS, CARD, RECORD, PRETRAINER)


def in_hub_cache(folder: Path) -> bool:
    """Whether ``folder`` is a snapshot in a Hugging Face cache (``models--ORG--NAME/snapshots/REV``): its files
    belong to huggingface_hub (links into ``blobs/``, shared between revisions), so mimzoo never writes there."""
    folder = Path(folder).resolve()
    return folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--")


def require_backbone_folder(folder: Path) -> None:
    """Raise a one-line error unless ``folder`` holds a timm ``config.json`` and ``model.safetensors``."""
    if not folder.is_dir():
        raise MimzooError(f"{folder} is not a folder")
    if (folder / CHECKPOINT).is_file():
        raise MimzooError(f"{folder} is a run folder, not an export: use {folder / 'export'} (written at the end of "
                          f"pretraining, or by `mimzoo export {folder}`)")
    missing = [name for name in (CONFIG, WEIGHTS) if not (folder / name).is_file()]
    if missing:
        raise MimzooError(f"{folder} is not an export: it has no {' or '.join(missing)} "
                          "(`mimzoo export RUN` writes one to RUN/export)")


def previous_export(folder: Path) -> dict[str, Any] | None:
    """The ``mimzoo.json`` of ``folder`` if it is a previous mimzoo export (which an export may replace), None if it
    is absent or an empty folder; anything else (a file, a run folder, other files) is a one-line error, since
    replacing it would lose what the user put there, and so is a place where it cannot be built (read-only)."""
    writable_folder(Path(folder).resolve().parent)  # the new folder is built beside it
    if not os.path.lexists(folder):
        return None
    if not folder.is_dir():
        raise MimzooError(f"{folder} is a file, not a folder: export into a new or empty folder, or a previous export")
    if (folder / CHECKPOINT).exists():
        raise MimzooError(f"{folder} is a run folder: export into a new or empty folder (the default is RUN/export)")
    names = sorted(entry.name for entry in folder.iterdir())
    if not names:
        return None
    other = [name for name in names if name not in EXPORT_FILES or not (folder / name).is_file()]
    if other:
        shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise MimzooError(f"{folder} holds files that are not part of a mimzoo export ({shown}): export into a new "
                          "or empty folder, or move them out first")
    if not {CONFIG, WEIGHTS, RECORD} <= set(names):
        missing = sorted({CONFIG, WEIGHTS, RECORD} - set(names))
        raise MimzooError(f"{folder} is not a mimzoo export (it has no {' or '.join(missing)}): export into a new "
                          "or empty folder")
    record = read_json(folder / RECORD, "export into a new or empty folder")
    if not is_record(record):
        raise MimzooError(f"{folder / RECORD} is not the record of a mimzoo export: export into a new or empty folder")
    return record


def read_json(path: Path, fix: str = "restore it, or write the folder again with mimzoo") -> dict[str, Any]:
    """A JSON object from ``path``; a file that is unreadable, not UTF-8 JSON or not an object is a one-line error
    naming it and ``fix``."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MimzooError(f"cannot read {path}: {one_line(exc, 200)}; {fix}") from None
    if not isinstance(values, dict):
        raise MimzooError(f"{path} holds a JSON {type(values).__name__}, not an object; {fix}")
    return values


def is_record(record: dict[str, Any]) -> bool:
    """Whether a ``mimzoo.json`` has the shape mimzoo writes: method and arch names, a config and result rows."""
    return (isinstance(record.get("method"), str) and isinstance(record.get("arch"), str)
            and isinstance(record.get("config"), dict) and isinstance(record.get("results"), list)
            and all(isinstance(row, dict) for row in record["results"]))


def read_record(folder: Path) -> dict[str, Any]:
    """The ``mimzoo.json`` of an export folder; a one-line error for a folder mimzoo did not export."""
    require_backbone_folder(folder)
    if not (folder / RECORD).is_file():
        raise MimzooError(f"{folder} is a timm backbone but not a mimzoo export (no {RECORD}); "
                          "results and cards need a folder made by `mimzoo export`")
    fix = "restore it, or export the run again (mimzoo export RUN --out FOLDER)"
    record = read_json(folder / RECORD, fix)
    if not is_record(record):
        raise MimzooError(f"{folder / RECORD} is not the record of a mimzoo export (method, arch, config, results); "
                          f"{fix}")
    return record
