"""One console for the CLI, and the wrapper that turns user errors into one clean line."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


INTERRUPTED = 130  # the shell's exit status for a command stopped by SIGINT (128 + 2)


def fail_cleanly(command: F) -> F:
    """Print ``error: <message>`` for a MimzooError (rank 0 only) and exit 1, with no traceback; on Ctrl-C or SIGTERM
    (a scheduler's time limit, ``timeout``, torchrun stopping its workers), say where a training loop stopped and how
    to continue (``mimzoo.errors.Interrupted``) and exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mimzoo.errors import MimzooError

        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            return command(*args, **kwargs)
        except MimzooError as exc:
            _say(f"error: {exc}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            _say(str(exc) or "interrupted")
            raise typer.Exit(INTERRUPTED) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def _say(line: str) -> None:
    if is_main_process():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
