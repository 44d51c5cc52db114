"""Terminal output shared by commands: JSON for CI, progress bars only on a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Protocol

    class Progress(Protocol):
        def advance(self, n: int = 1, nbytes: int = 0) -> None: ...


def emit_json(obj: Any) -> None:
    """Print one JSON document on stdout."""
    import json

    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


class _NoProgress:
    def advance(self, n: int = 1, nbytes: int = 0) -> None:
        pass


class _RichProgress:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1, nbytes: int = 0) -> None:
        self._progress.update(self._task, advance=n)


@contextmanager
def progress(description: str, total: int | None, *, enabled: bool = True) -> Iterator[Progress]:
    """A progress bar on stderr when it is a terminal and ``enabled``; silent otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield _NoProgress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield _RichProgress(bar, task)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
