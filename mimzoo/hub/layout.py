"""The files of an export folder (which is also the layout of its Hub repo) and how to read them.

- ``config.json`` and ``model.safetensors``: the encoder as plain timm loads it (``timm.create_model('hf-hub:..')``)
- ``README.md``: the model card, generated from the two JSON files (never edited by hand)
- ``mimzoo.json``: the method, its config, the pretraining record and every measured result
- ``pretrainer.safetensors``: the whole pretraining model (encoder, decoder, mask token, ...)

Only the first two are required to use a folder as a backbone; the rest make it a mimzoo export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mimzoo.errors import MimzooError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
RECORD = "mimzoo.json"
PRETRAINER = "pretrainer.safetensors"


def require_backbone_folder(folder: Path) -> None:
    """Raise a one-line error unless ``folder`` holds a timm ``config.json`` and ``model.safetensors``."""
    if not folder.is_dir():
        raise MimzooError(f"{folder} is not a folder")
    missing = [name for name in (CONFIG, WEIGHTS) if not (folder / name).is_file()]
    if missing:
        raise MimzooError(
            f"{folder} is not an export: it has no {' or '.join(missing)} "
            f"(make one with `mimzoo export RUN --out {folder}`)"
        )


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MimzooError(f"cannot read {path}: {exc}") from exc


def read_record(folder: Path) -> dict[str, Any]:
    """The ``mimzoo.json`` of an export folder; a one-line error for a folder mimzoo did not export."""
    require_backbone_folder(folder)
    if not (folder / RECORD).is_file():
        raise MimzooError(f"{folder} is a timm backbone but not a mimzoo export (no {RECORD}); "
                          "results and cards need a folder made by `mimzoo export`")
    return read_json(folder / RECORD)
