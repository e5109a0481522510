"""The metrics log (``metrics.jsonl``) and the live progress display.

``metrics.jsonl`` holds one JSON object per logged optimizer step:

``stage`` (name), ``stage_index``, ``kind``, ``step`` (optimizer steps done in the stage),
``global_step``, ``loss`` (mean over loss tokens, or over layers/heads for matrix/hidden),
``lr``, ``grad_norm`` (before clipping), ``tokens`` (tokens consumed in the stage, all
processes), ``tokens_per_s`` (over the logging window), ``elapsed_s`` (the run's training wall
seconds: a resumed run goes on from the ``elapsed_s`` its checkpoint recorded) and ``time`` (Unix
seconds).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from thinkfast.data.files import iter_jsonl_objects
from thinkfast.progress import live_progress
from thinkfast.tables import format_number


class MetricsLog:
    """Appends JSON lines to ``path``; on resume, drops lines logged after the checkpoint."""

    def __init__(self, path: Path, *, resume_global_step: int | None = None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_global_step is None:
            path.write_text("")
        elif path.exists():
            kept = [record for record in _records(path, fix=_RESUME_FIX)
                    if record.get("global_step", 0) <= resume_global_step]
            # written aside and renamed: a kill while rewriting leaves the old file whole, never half of it
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(record) + "\n" for record in kept))
            os.replace(tmp, path)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")


#: What to do about a damaged line of a metrics file that a run resumes.
_RESUME_FIX = "the metrics of this run cannot be resumed; remove the line or start a new --output-dir"


def _records(path: Path, fix: str) -> list[dict[str, Any]]:
    """Every record of a metrics file. A last line cut short (the process was killed while writing it) is
    left out; a damaged line before it is a :class:`DataError` naming the file, the line and ``fix``."""
    return [record for _, record in iter_jsonl_objects(path, on_cut_end=lambda where: None, fix=fix)]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` file (a last line cut short by a killed run left out)."""
    return _records(path, fix="delete the line")


class ProgressDisplay:
    """The progress of each stage: step, loss, tokens/s, lr, elapsed time and ETA, as a bar on a terminal or
    a line now and then in a log (:func:`thinkfast.progress.live_progress`). Disabled: does nothing.

    :meth:`close` stops it (the bar's last frame stays); a run must close it however it ends, so that
    nothing is drawn after an error or Ctrl-C message.
    """

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._console = console or Console(stderr=True)

    def start_stage(self, label: str, total_steps: int, done: int = 0) -> None:
        if not self.enabled:
            return
        self.close()
        self._progress = live_progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
            TextColumn("lr {task.fields[lr]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self._console,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total_steps, completed=done, loss="-", tps="-", lr="-")

    def update(self, step: int, loss: float, tokens_per_s: float, lr: float) -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", tps=format_number(tokens_per_s),
                              lr=f"{lr:.2e}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
