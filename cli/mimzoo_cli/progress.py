"""Rich rendering of the training loop's reports (the library's Reporter)."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mimzoo.engine.report import Reporter
from mimzoo_cli.console import console

# the numbers worth a glance on the bar, and how to print them
STATS = {"loss": ".4f", "lr": ".2e", "img_per_s": ".0f", "top1": ".2f"}


class RichReporter(Reporter):
    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = None

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def start(self, total_steps: int, done_steps: int, description: str = "") -> None:
        """A new bar; earlier bars of the same command (feature extraction, then training) stay on screen."""
        self.progress.start()
        self.task = self.progress.add_task(description, total=total_steps, completed=done_steps, stats="")

    def update(self, step: int, logs: dict[str, Any]) -> None:
        shown = {k: v for k, v in logs.items() if k in STATS and isinstance(v, (int, float))}
        stats = {"stats": " ".join(f"{k} {format(v, STATS[k])}" for k, v in shown.items())} if shown else {}
        self.progress.update(self.task, completed=step, **stats)  # keep the last numbers between log steps

    def stop(self) -> None:
        """The bar stays where the work got to: full at the end, short of it after an error or Ctrl-C."""
        self.progress.stop()
