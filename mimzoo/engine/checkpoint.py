"""The resumable training checkpoint, written atomically and read back with ``weights_only=True``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimzoo.engine.atomic import atomic_path
from mimzoo.errors import MimzooError, not_a_zip, one_line

CHECKPOINT = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Every random stream a training step may draw from: torch (and CUDA), numpy (timm's Mixup) and Python's
    (timm's RandAugment and random erasing), as tensors and plain values that ``weights_only`` loads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                       "gauss": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`; a checkpoint from before numpy and Python were saved restores torch alone."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        saved = state["numpy"]
        np.random.set_state(("MT19937", saved["keys"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"],
                             saved["gauss"]))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: torch.device, required: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """A checkpoint mimzoo wrote, holding at least the ``required`` entries; anything else (a damaged or foreign
    file) is a one-line error naming it."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a damaged pickle fails in torch's unpickler with any error type
        raise MimzooError(f"cannot read {path} ({unreadable_because(path, exc)}); it is damaged or not a mimzoo "
                          "checkpoint (restore it from a backup, or start a new run in another --out)") from None
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise MimzooError(f"{path} is not a mimzoo checkpoint (it has no {', '.join(missing)}); restore it from a "
                          "backup, or start a new run in another --out")
    return state


def unreadable_because(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` refused ``path``, in words: its unpickler's own errors ("KeyError: 101") say nothing."""
    why = not_a_zip(path)
    if why == "not a zip archive":
        with open(path, "rb") as file:
            if file.read(1) != b"\x80":  # torch before 1.6 wrote a bare pickle, not a zip
                return "neither a zip archive, as torch.save writes, nor a pickle"
    elif why is not None:
        return why
    return f"{type(exc).__name__}: {one_line(exc, 200)}"


def resumable(out: Path, resume: bool) -> bool:
    """Whether a run in ``out`` continues from its checkpoint: ``--resume`` needs one, a new run must not find one."""
    exists = (Path(out) / CHECKPOINT).exists()
    if resume and not exists:
        runs = sorted(str(p.parent) for p in Path(out).parent.glob(f"*/{CHECKPOINT}"))
        hint = f"; the runs beside it: {', '.join(runs)} (resume one with --out RUN)" if runs else ""
        raise MimzooError(f"no checkpoint to resume in {out}; drop --resume to start a new run there{hint}")
    if not resume and exists:
        raise MimzooError(f"{out} already holds a run; continue it with --resume or choose a new --out")
    return resume
