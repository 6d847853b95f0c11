"""Ctrl-C and SIGTERM held back while a training step applies its update, so that a stop never leaves the weights
half-updated: the signal's own handler (Python's KeyboardInterrupt, the CLI's SIGTERM one) runs once it is done."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class HeldStops:
    """Within ``with HeldStops() as stops``, ``with stops.hold():`` delays those signals to the block's end.

    Only handlers that are functions are wrapped: an ignored signal stays ignored, a default one kills as before,
    and off the main thread (where Python cannot set handlers) nothing is held."""

    def __init__(self) -> None:
        self.previous: dict[int, object] = {}
        self.holding = False
        self.held: tuple[int, FrameType | None] | None = None

    def __enter__(self) -> HeldStops:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler):
                    self.previous[signum] = handler
                    signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.holding:
            self.held = (signum, frame)
        else:
            self.previous[signum](signum, frame)

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            held, self.held, self.holding = self.held, None, False
        # reached only when the block succeeded: an error in it stops the run and must not turn into a Ctrl-C
        if held is not None:
            self.previous[held[0]](*held)
