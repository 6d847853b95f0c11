"""How long-running work talks to a user; the CLI renders it with rich. Only rank 0 reports."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any


class Reporter:
    """The library's default prints messages and draws no progress bar.

    A ``start`` while a phase runs (an evaluation inside training) opens a nested phase until its ``stop``."""

    def message(self, text: str) -> None:
        print(text, flush=True)

    def start(self, total_steps: int, done_steps: int, description: str = "") -> None: ...

    def update(self, step: int, logs: dict[str, Any]) -> None: ...

    def stop(self) -> None: ...


class SilentReporter(Reporter):
    """For ranks other than 0."""

    def message(self, text: str) -> None: ...


def for_rank(reporter: Reporter | None, is_main: bool) -> Reporter:
    return (reporter or Reporter()) if is_main else SilentReporter()


class Reported:
    """``batches`` (a loader) as a progress phase of its own, for an evaluation or a feature extraction, inside a
    running phase or alone: ``with Reported(loader, reporter, "features") as batches: for batch in batches: ...``.
    The phase ends with the ``with`` block, whatever stops it."""

    def __init__(self, batches: Sized, reporter: Reporter, description: str) -> None:
        self.batches, self.reporter, self.description = batches, reporter, description

    def __enter__(self) -> Reported:
        self.reporter.start(len(self.batches), 0, self.description)
        return self

    def __exit__(self, *exc: object) -> None:
        self.reporter.stop()

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.batches):
            yield batch
            self.reporter.update(i + 1, {})
