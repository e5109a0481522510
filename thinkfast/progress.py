"""The progress bar of the long subcommands: label, bar, done/total samples, a rate, elapsed time."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def sample_progress(label: str, console: Any = None, disable: bool = False, transient: bool = False) -> Progress:
    """A :class:`rich.progress.Progress` counting samples; add tasks with a ``rate`` field (text after the count)."""
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                    console=console, disable=disable, transient=transient)
