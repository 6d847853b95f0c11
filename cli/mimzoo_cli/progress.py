"""Rich rendering of the training loop's reports (the library's Reporter): a live bar on a terminal, a plain line
per log step elsewhere (nohup, SLURM, ``| tee``), where a live bar would show only at the end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mimzoo.engine.report import Reporter
from mimzoo_cli.console import console as default_console

# the numbers worth a glance on the bar, and how to print them
STATS = {"loss": ".4f", "lr": ".2e", "img_per_s": ".0f", "top1": ".2f"}


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or default_console
        self.progress: Progress | None = None
        self.task = None
        self.description, self.total = "", 0

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def start(self, total_steps: int, done_steps: int, description: str = "") -> None:
        """A new bar below the finished ones (feature extraction, then training), each drawn once."""
        self.description, self.total = description, total_steps
        if not self.console.is_terminal:
            return
        # a fresh Progress each time: a stopped one keeps its tasks and would draw the earlier bars again
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task(description, total=total_steps, completed=done_steps, stats="")

    def update(self, step: int, logs: dict[str, Any]) -> None:
        shown = {k: v for k, v in logs.items() if k in STATS and isinstance(v, (int, float))}
        stats = " ".join(f"{k} {format(v, STATS[k])}" for k, v in shown.items())
        if self.progress is None:  # not a terminal: a line per step that logs numbers
            if stats:
                self.message(f"{self.description} {step}/{self.total} {stats}")
            return
        self.progress.update(self.task, completed=step, **({"stats": stats} if stats else {}))  # keep the last

    def stop(self) -> None:
        """The bar stays where the work got to: full at the end, short of it after an error or Ctrl-C."""
        if self.progress is None:
            return
        self.progress.stop()
        self.progress, self.task = None, None
