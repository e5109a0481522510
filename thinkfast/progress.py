"""Live progress of the long subcommands: a bar on a terminal, a plain line now and then in a log.

On an interactive terminal (stderr a terminal, ``TERM`` not ``dumb``) a rich bar redraws in place. Anywhere
else (stderr redirected to a file, ``nohup``, a Slurm or CI log) nothing is redrawn: every
``THINKFAST_PROGRESS_SECONDS`` seconds (default :data:`DEFAULT_SECONDS`; 0: never) one plain line with the
bar's fields and the percentage done is written instead, without carriage returns or colour codes, so that
a log shows the run is alive and how far it got. Either way nothing is written once the display stops: an
interrupted run's last line is the CLI's own message.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from thinkfast.errors import ThinkfastError

#: The environment variable that sets the seconds between progress lines in a log (0: none).
SECONDS_ENV = "THINKFAST_PROGRESS_SECONDS"
#: Seconds between progress lines in a log when :data:`SECONDS_ENV` is not set.
DEFAULT_SECONDS = 60.0


def log_interval() -> float:
    """Seconds between progress lines in a log (:data:`SECONDS_ENV`; 0: no lines)."""
    text = os.environ.get(SECONDS_ENV, "").strip()
    if not text:
        return DEFAULT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ThinkfastError(f"{SECONDS_ENV}={text!r} is not a number of seconds; set it to e.g. "
                             f"{DEFAULT_SECONDS:g}, or 0 for no progress lines in logs")
    return seconds


class LogProgress(Progress):
    """A :class:`rich.progress.Progress` for a log: never redraws; every ``interval`` seconds (counted from
    its start) an update writes one plain line per unfinished task, the columns' text with the bar shown as
    the percentage done. ``interval`` 0: writes nothing."""

    def __init__(self, *columns: ProgressColumn, console: Console, interval: float):
        super().__init__(*columns, console=console, auto_refresh=False)
        self.interval = interval
        self._last_line = time.monotonic()

    def start(self) -> None:
        self._last_line = time.monotonic()

    def stop(self) -> None:
        pass

    def refresh(self) -> None:
        pass

    def update(self, task_id: TaskID, **changes: Any) -> None:
        super().update(task_id, **changes)
        self._maybe_log()

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_log()

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if not self.interval or now - self._last_line < self.interval:
            return
        self._last_line = now
        for task in self.tasks:
            if task.visible and not task.finished:
                self.console.print(self.line(task), soft_wrap=True, highlight=False)

    def line(self, task: Any) -> Text:
        """One task's plain line: each column's text; the bar is the percentage done (nothing without a total)."""
        parts = []
        for column in self.columns:
            if isinstance(column, BarColumn):
                parts.append("" if task.total is None else f"{task.percentage:.0f}%")
                continue
            if isinstance(column, str):  # rich's shorthand for a TextColumn
                parts.append(Text.from_markup(column.format(task=task)).plain)
                continue
            rendered = column(task)
            parts.append(rendered.plain if isinstance(rendered, Text) else "")
        return Text(" ".join(part.strip() for part in parts if part.strip()))


def _redraws(console: Console) -> bool:
    """Whether a bar on ``console`` redraws in place (an interactive terminal or a notebook), not a log."""
    return console.is_interactive or console.is_jupyter


def quiet_library_bars(console: Console) -> None:
    """When ``console`` (stderr) is not a terminal, turn off the tqdm bars of the libraries we call (loading
    weights, de-quantizing a GGUF file, downloads), which would fill a log with carriage-return-redrawn frames.

    Sets ``HF_HUB_DISABLE_PROGRESS_BARS`` and ``TQDM_DISABLE`` (each unless the user set it), which
    ``huggingface_hub``, ``transformers`` and tqdm read; a Hugging Face library already imported is told too.
    """
    if _redraws(console):
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] != "1":
        return
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def live_progress(*columns: ProgressColumn, console: Console, disable: bool = False,
                  transient: bool = False) -> Progress:
    """A bar of ``columns`` on an interactive ``console``, else a :class:`LogProgress` of the same columns.
    ``disable``: shows and writes nothing; ``transient``: the bar is erased when it stops."""
    if disable or _redraws(console):
        return Progress(*columns, console=console, disable=disable, transient=transient)
    return LogProgress(*columns, console=console, interval=log_interval())


def sample_progress(label: str, console: Any = None, disable: bool = False, transient: bool = False) -> Progress:
    """A :func:`live_progress` counting samples; add tasks with a ``rate`` field (text after the count)."""
    return live_progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
                         TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                         console=console or Console(stderr=True), disable=disable, transient=transient)


class CurrentWork:
    """The one long piece of work running now, when it has no count to advance (a profile cell): on a
    terminal a spinner line with its elapsed time, erased when the work ends; in a log, while it runs, a plain
    line ``"<text>, H:MM:SS so far"`` every :func:`log_interval` seconds (none for work that ends sooner).

    Use :meth:`begin` and :meth:`end` (each ``begin`` ends the work before), or the object as a context
    manager that ends whatever is running on exit, so that nothing is drawn after an error's message.
    """

    def __init__(self, console: Console):
        self.console = console
        self._spinner: Progress | None = None
        self._stop: threading.Event | None = None
        self._reporter: threading.Thread | None = None

    def begin(self, text: str) -> None:
        self.end()
        if _redraws(self.console):
            self._spinner = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                                     TimeElapsedColumn(), console=self.console, transient=True)
            self._spinner.add_task(text, total=None)
            self._spinner.start()
            return
        interval = log_interval()
        if not interval:
            return
        stop, started = threading.Event(), time.monotonic()

        def report() -> None:
            while not stop.wait(interval):
                so_far = dt.timedelta(seconds=int(time.monotonic() - started))
                self.console.print(f"{text}, {so_far} so far", soft_wrap=True, highlight=False, markup=False)

        self._stop = stop
        self._reporter = threading.Thread(target=report, name="thinkfast-progress", daemon=True)
        self._reporter.start()

    def end(self) -> None:
        """Stop showing the work; nothing about it is written once this returns."""
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
        if self._stop is not None and self._reporter is not None:
            self._stop.set()
            self._reporter.join()
            self._stop = self._reporter = None

    def __enter__(self) -> CurrentWork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()
