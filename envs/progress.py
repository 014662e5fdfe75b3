"""The one progress bar used by long-running work (caching, generation, training, evaluation).

A ``rich`` bar with count, rate and ETA; ``enabled=False`` turns it into a no-op so library
callers and tests stay quiet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class ProgressHandle:
    """What a ``with progress_bar(...)`` block gets: ``advance`` and ``describe``."""

    def __init__(self, progress: Progress | None, task: TaskID | None):
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1) -> None:
        """Count ``amount`` more units as done."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def describe(self, text: str) -> None:
        """Replace the bar's description (e.g. to show the current loss)."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=text)


class RateColumn(TextColumn):
    """Units per second, from rich's own speed estimate."""

    def __init__(self, unit: str):
        super().__init__("")
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, *, unit: str = "it",
                 enabled: bool = True) -> Iterator[ProgressHandle]:
    """A progress bar showing done/total, rate (``unit``/s), elapsed time and ETA."""
    if not enabled:
        yield ProgressHandle(None, None)
        return
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TaskProgressColumn(), RateColumn(unit),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    # stderr: stdout belongs to results (e.g. one JSON object per line with --json).
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield ProgressHandle(progress, task)


class TrainingProgress:
    """Feeds the PPO timesteps of one training after another into one progress bar.

    :meth:`update` is the ``on_update`` callback of :func:`rl_scaniqa.agents.cotrain.cotrain`
    (its stats carry ``timesteps``); :meth:`finish` completes the training's share of the bar,
    also when it resumed from a checkpoint and reported fewer steps.
    """

    def __init__(self, handle: ProgressHandle):
        self.handle = handle
        self.total = 0
        self.done = 0

    def start(self, description: str, total: int) -> None:
        self.handle.describe(description)
        self.total, self.done = total, 0

    def update(self, stats: Mapping[str, Any]) -> None:
        current = min(int(stats.get("timesteps", 0)), self.total)
        self.handle.advance(current - self.done)
        self.done = current

    def finish(self) -> None:
        self.handle.advance(self.total - self.done)
        self.done = self.total
