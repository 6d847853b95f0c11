"""How long-running work talks to a user; the CLI renders it with rich. Only rank 0 reports."""

from __future__ import annotations

from typing import Any


class Reporter:
    """The library's default prints messages and draws no progress bar."""

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
