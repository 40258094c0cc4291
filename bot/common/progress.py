"""One progress display for long work, on stderr: bars with counts, or a spinner naming the current step.

    >>> with progress(show=True) as display:
    ...     task = display.add("@alice", total=3200)          # a bar: 0/3200
    ...     display.advance(task, 100)
    ...     step = display.add("Publishing", total=None)      # no total: a spinner
    ...     display.update(step, description="Uploading 9 files")

With `show=False`, or when stderr is not a terminal (a log file, a pipe), nothing is drawn and every call
does nothing, so callers never need to ask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

# A function told each step of long work in a short line ("Uploading 9 files"): for callers with a display.
Progress = Callable[[str], None]


class Display:
    """The calls a progress display takes; this one draws nothing."""

    def add(self, description: str, total: float | None = None):
        return None

    def advance(self, task, n: float = 1) -> None:
        pass

    def update(self, task, **fields) -> None:
        pass

    def finish(self, task) -> None:
        pass


class _RichDisplay(Display):
    def __init__(self, bar):
        self.bar = bar

    def add(self, description: str, total: float | None = None):
        return self.bar.add_task(description, total=total, count=_count(0, total))

    def advance(self, task, n: float = 1) -> None:
        self.bar.advance(task, n)
        self._recount(task)

    def update(self, task, **fields) -> None:
        self.bar.update(task, **fields)
        self._recount(task)

    def finish(self, task) -> None:
        done = next(t.completed for t in self.bar.tasks if t.id == task)
        self.update(task, total=done)  # the real count, when there were fewer than announced

    def _recount(self, task) -> None:
        t = next(t for t in self.bar.tasks if t.id == task)
        self.bar.update(task, count=_count(t.completed, t.total))


def _count(done: float, total: float | None) -> str:
    """'120/3,200', or nothing for a step with no total (a spinner)."""
    return "" if total is None else f"{int(done):,}/{int(total):,}"


@contextmanager
def progress(show: bool = True, console=None, transient: bool = True) -> Iterator[Display]:
    """A progress display on `console` (default: stderr); `transient` clears it when done."""
    from rich.console import Console

    console = console or Console(stderr=True)
    if not show or not console.is_terminal:
        yield Display()
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.fields[count]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=transient) as bar:
        yield _RichDisplay(bar)
