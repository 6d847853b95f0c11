"""One console for the CLI, and the wrapper that turns user errors into one clean line."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def fail_cleanly(command: F) -> F:
    """Print ``error: <message>`` for a MimzooError (rank 0 only) and exit 1, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mimzoo.errors import MimzooError

        try:
            return command(*args, **kwargs)
        except MimzooError as exc:
            if is_main_process():
                console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
