"""Checks, before any work, that what a command will write can be written and replaces only mimzoo's own files.

A user's file is never replaced: a file mimzoo writes over (results.json, a figure, a saved model) must carry
mimzoo's mark; a link or folder in its place is refused too (a link would send the write elsewhere).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import metadata_load

from mimzoo.errors import MimzooError, one_line

SOFTWARE = "mimzoo"  # the mark: results.json's "software", a card's tag, a figure's PNG text or JPEG comment
RESULTS = "results.json"


def writable_folder(folder: Path, option: str = "--out") -> Path:
    """``folder`` (normalised) if it is, or can be created as, a folder this process may write into; nothing is
    created (a probe file without a name checks the nearest existing folder)."""
    folder = Path(os.path.normpath(folder))
    if os.path.lexists(folder) and not folder.is_dir():
        raise MimzooError(f"{option} {folder} is a file, not a folder; name a folder (new or mimzoo's)")
    existing = folder
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise MimzooError(f"cannot create {option} {folder}: {existing} is a file; name another folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()  # O_TMPFILE: leaves nothing, even if killed
    except OSError as exc:
        raise MimzooError(f"cannot write into {existing} ({one_line(exc)}); choose another {option}") from None
    return folder


def replaceable(path: Path, is_ours: Callable[[Path], bool], option: str = "--out") -> Path:
    """``path`` if it is absent or something mimzoo wrote (``is_ours``): never a link, a foreign file or folder."""
    path = Path(path)
    if os.path.islink(path):
        raise MimzooError(f"{path} is a link; mimzoo does not write through links: choose another {option}")
    if os.path.lexists(path) and not is_ours(path):
        raise MimzooError(f"{path} exists and mimzoo did not write it; choose another {option} or move it away")
    return path


def results_are_ours(path: Path) -> bool:
    """Whether ``path`` is a results.json mimzoo wrote (a JSON object carrying its mark)."""
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(results, dict) and results.get("software") == SOFTWARE


def card_is_ours(path: Path) -> bool:
    """Whether ``path`` is a model card mimzoo generated (its metadata's tags hold "mimzoo")."""
    try:
        metadata = metadata_load(path) or {}
    except Exception:  # a foreign file can fail huggingface_hub's YAML reader in any way: it is not ours
        return False
    return isinstance(metadata, dict) and SOFTWARE in (metadata.get("tags") or [])


def marked(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with mimzoo's mark first, as every results.json is written."""
    return {"software": SOFTWARE, **results}
