"""Writing ``report.json`` and printing the summary table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from thinkfast.evaluate.engine import Evaluation, Series


def write_report(evaluation: Evaluation, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``report.json`` atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**(extra or {}), **evaluation.report()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _cell(series: Series, index: int) -> str:
    """``mean [low, high]`` in percent (the interval's ends, which need not be symmetric); the mean alone
    without an interval."""
    m, lo, hi = series.mean[index], series.low[index], series.high[index]
    if lo is None or hi is None:
        return f"{100 * m:.1f}"
    return f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def summary_table(evaluation: Evaluation, confidence: float | None) -> Table:
    """One row per (model, dataset): coverage and each aggregator's accuracy at k = 1 and k = n (%).

    ``confidence``: the level of the bootstrap intervals shown in brackets; None: no intervals.
    """
    labels = list(dict.fromkeys(a for r in evaluation.results for a in r.accuracy))
    interval = "" if confidence is None else f" [{100 * confidence:g}% bootstrap interval]"
    table = Table(title=f"accuracy in %{interval}", title_justify="left")
    for column in ("model", "dataset", "problems×n", "s/sample", "pass@1", "pass@n"):
        table.add_column(column, justify="left" if column in ("model", "dataset") else "right", no_wrap=True)
    for label in labels:
        table.add_column(f"{label}@n", justify="right", no_wrap=True)
    for r in evaluation.results:
        seconds = "-" if r.seconds_per_sample is None else f"{r.seconds_per_sample:.3g}"
        row = [r.model, r.dataset, f"{r.problems}×{r.n_samples}", seconds, _cell(r.coverage, 0),
               _cell(r.coverage, -1)]
        row += [_cell(r.accuracy[label], -1) if label in r.accuracy else "-" for label in labels]
        table.add_row(*row)
    return table


def print_summary(evaluation: Evaluation, confidence: float | None, console: Console | None = None) -> None:
    """Print the table and one line on grading throughput."""
    console = console or Console(highlight=False)
    console.print(summary_table(evaluation, confidence))
    g = evaluation.grading
    rate = g["samples_per_second"]
    console.print(f"graded {g['samples']} samples in {g['seconds']:.1f} s"
                  + (f" ({rate:.0f} samples/s, {g['workers']} workers)" if rate else "")
                  + (f"; {g['workers_killed']} check(s) killed at the {g['timeout_seconds']:g} s timeout"
                     if g["workers_killed"] else ""))
