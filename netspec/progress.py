"""Progress bars for long work: shown on a terminal, silent otherwise.

Small jobs never show a bar (below ``THRESHOLD`` bytes), so a bar means the wait is real.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Iterator

THRESHOLD = 256 * 1024 * 1024


def _wanted(total: int) -> bool:
    setting = os.environ.get("NETSPEC_PROGRESS", "auto")
    if setting == "never":
        return False
    if setting == "always":
        return True
    return total >= THRESHOLD and sys.stderr.isatty()


@contextlib.contextmanager
def progress(description: str, total: int,
             measure: Callable[[Any], int] | None = None) -> Iterator[Callable[[Any], None]]:
    """``advance(n)`` for ``total`` units of work (bytes), with a bar when it is worth one.

    With ``measure``, ``advance(item)`` counts ``measure(item)`` units, and ``measure`` runs
    only while a bar is shown: the size of each piece of work is then not worked out for
    nothing (a model's modules: a microsecond each, most of them holding no tensors).
    """
    if not _wanted(total):
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    console = Console(stderr=True, force_terminal=os.environ.get("NETSPEC_PROGRESS") == "always")
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True)
    with bar:
        task = bar.add_task(description, total=total)
        if measure is None:
            yield lambda n: bar.advance(task, n)
        else:
            yield lambda item: bar.advance(task, measure(item))


def _ignore(item: Any) -> None:
    """``advance`` without a bar."""
