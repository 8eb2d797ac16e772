"""The progress bar of the long commands (``fetch``, ``send``), on stderr.

Each command adapts it to what its pipeline reports (``advance``); the bar itself is
shared so every command's looks and behaves the same.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class ProgressBar:
    """A rich progress bar on stderr, removed when done so the summary stays clean."""

    def __init__(self, verb: str) -> None:
        self._progress = Progress(
            TextColumn(verb),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task: TaskID | None = None

    def start(self, total: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("", total=total)

    def step(self, description: str) -> None:
        """One item done; ``description`` says which (before ``start``: ignored)."""
        if self._task is not None:
            self._progress.update(self._task, advance=1, description=description)

    def stop(self) -> None:
        self._progress.stop()
