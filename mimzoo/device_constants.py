"""Constant tensors made once per device (and shape), so a training step copies nothing from the host."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def device_constant(make: F) -> F:
    """``functools.lru_cache`` for a function of hashable arguments that makes constant tensors. Under
    ``torch.compile`` it calls ``make`` itself: dynamo traces through caches anyway (the constants become part of
    the graph) and warns of every cache it meets."""
    cached = functools.lru_cache(maxsize=16)(make)

    @functools.wraps(make)
    def constant(*args):
        return make(*args) if torch.compiler.is_compiling() else cached(*args)

    return constant  # type: ignore[return-value]
