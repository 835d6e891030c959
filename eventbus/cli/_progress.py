"""A progress bar for long reads: Rich, on stderr, and only when stderr is a terminal.

Output meant for programs (stdout, or a file) is never touched by it: when
stderr is not a terminal there is no bar at all, and when stdout is the same
terminal as the bar, Rich prints the output lines above the bar instead of
through it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

__all__ = ["progress"]

_REFRESHES_PER_SECOND = 10


class _RateColumn(ProgressColumn):
    """Records per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.completed and task.elapsed:
            speed = task.completed / task.elapsed  # too few samples yet for Rich's moving average
        return Text("" if speed is None else f"{speed:,.0f} records/s", style="progress.data.speed")


def _ignore(count: int) -> None:
    """What advancing costs when no bar is drawn."""


@contextmanager
def progress(total: int, *, label: str) -> Iterator[Callable[[int], None]]:
    """A function advancing a bar of ``total`` records, drawn while the block runs.

    The bar shows records done, the rate and the time left (ETA). It is drawn
    only when stderr is a terminal; otherwise the function does nothing.
    Rich redraws it at most ten times a second, so advancing costs nothing per record.
    """
    if total <= 0 or not sys.stderr.isatty():
        yield _ignore
        return
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        refresh_per_second=_REFRESHES_PER_SECOND,
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=False,
    )
    with bar:
        task = bar.add_task(label, total=total)
        yield partial(bar.advance, task)
