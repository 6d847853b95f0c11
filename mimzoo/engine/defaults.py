"""Defaults every command shares: data-loading workers and the warm-up rule (torch-free, so ``--help`` can say them)."""

from __future__ import annotations

import os

from mimzoo.errors import MimzooError

MAX_WORKERS = 8
# a recipe's warm-up is for its full length; a shorter run warms up for at most this fraction of its epochs
MAX_WARMUP_FRACTION = 0.25
# pretraining's: MAE's, for 400-1600 epochs (a method whose reference warms short runs up otherwise says so in its
# MethodSpec)
RECIPE_WARMUP_EPOCHS = 40


def default_workers() -> int:
    """Data-loading workers per process: the CPU cores this process may use (its affinity mask, which a scheduler
    sets, not the machine's count) shared by the processes torchrun starts on this machine, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def resolve_warmup(warmup_epochs: float | None, recipe: float, epochs: int) -> float:
    """The warm-up a run uses: the one given (between 0 and ``epochs``), else the recipe's, at most
    ``MAX_WARMUP_FRACTION`` of ``epochs``."""
    if warmup_epochs is None:
        return min(recipe, MAX_WARMUP_FRACTION * epochs)
    if not 0 <= warmup_epochs <= epochs:
        raise MimzooError(f"--warmup-epochs {warmup_epochs:g} must be between 0 and --epochs ({epochs}); leave it out "
                          "for the default (the recipe's, at most a quarter of the epochs)")
    return warmup_epochs
