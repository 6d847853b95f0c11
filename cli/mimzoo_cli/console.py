"""The CLI's two consoles, and the wrapper that turns user errors into one clean line.

What a command reports (its bars or log lines, its results) goes to stdout, so ``| tee`` and ``> log`` keep it and
a bar is drawn only when stdout is a terminal; errors, stops and hints beside a printed value go to stderr."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def fail_cleanly(command: F) -> F:
    """Print ``error: <message>`` for a MimzooError (rank 0 only) and exit 1, with no traceback; on Ctrl-C or SIGTERM
    (a scheduler's time limit, ``timeout``, torchrun stopping its workers), say where a training loop stopped and how
    to continue (``mimzoo.errors.Interrupted``) and exit as the shell reports a stop by that signal: 130 for SIGINT,
    143 for SIGTERM (128 + its number)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mimzoo.errors import MimzooError

        stopped_by = [signal.SIGINT]

        def on_sigterm(signum, frame):
            stopped_by[0] = signal.SIGTERM
            raise KeyboardInterrupt  # unwinds as Ctrl-C does: the loop reports its step and keeps the checkpoint

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            return command(*args, **kwargs)
        except MimzooError as exc:
            _say(f"error: {exc}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            _say(str(exc) or "interrupted")
            raise typer.Exit(128 + stopped_by[0]) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def _say(line: str) -> None:
    if is_main_process():
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
