"""Rich rendering of the training loop's reports (the library's Reporter): a live bar on a terminal, a plain line
per log step elsewhere (nohup, SLURM, ``| tee``), where a live bar would show only at the end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mimzoo.engine.report import Reporter
from mimzoo_cli.console import console as default_console

# the numbers worth a glance on the bar, and how to print them
STATS = {"loss": ".4f", "lr": ".2e", "img_per_s": ".0f", "top1": ".2f"}


@dataclass
class Phase:
    """One running phase: its bar's task on a terminal; off it, how far its plain lines got."""

    description: str
    total: int
    task: TaskID | None = None
    shown_tenths: int = 0
    stats_shown: bool = False


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or default_console
        self.progress: Progress | None = None
        self.phases: list[Phase] = []  # the running phase last; more than one while an evaluation runs in training

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def start(self, total_steps: int, done_steps: int, description: str = "") -> None:
        """A new bar below the finished ones (feature extraction, then training), each drawn once; inside a running
        phase, a bar below its bar until ``stop``."""
        phase = Phase(description, total_steps, shown_tenths=10 * done_steps // max(1, total_steps))
        self.phases.append(phase)
        if not self.console.is_terminal:
            return
        if self.progress is None:
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
        phase.task = self.progress.add_task(description, total=total_steps, completed=done_steps, stats="")

    def update(self, step: int, logs: dict[str, Any]) -> None:
        phase = self.phases[-1]
        shown = {k: v for k, v in logs.items() if k in STATS and isinstance(v, (int, float))}
        stats = " ".join(f"{k} {format(v, STATS[k])}" for k, v in shown.items())
        if self.progress is None:  # not a terminal: a line per step that logs numbers
            self._plain_line(phase, step, stats)
            return
        self.progress.update(phase.task, completed=step, **({"stats": stats} if stats else {}))  # keep the last

    def _plain_line(self, phase: Phase, step: int, stats: str) -> None:
        """A line for each step with numbers; a phase without numbers (an evaluation, a feature extraction) gets
        one each tenth of the way instead, so a long one still shows it is moving."""
        tenths = 10 * step // max(1, phase.total)
        if stats:
            phase.stats_shown = True
        elif phase.stats_shown or tenths <= phase.shown_tenths:
            return
        phase.shown_tenths = tenths
        self.message(f"{phase.description} {step}/{phase.total} {stats}".rstrip())

    def stop(self) -> None:
        """The bar stays where the work got to: full at the end, short of it after an error or Ctrl-C. A nested
        phase's bar goes when it ends."""
        if not self.phases:  # nothing started: a stop in a `finally` after an early error
            return
        phase = self.phases.pop()
        if self.progress is None:
            return
        if self.phases:
            self.progress.remove_task(phase.task)
            return
        self.progress.stop()
        self.progress = None
