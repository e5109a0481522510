"""Writing ``report.json`` and printing the summary table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from thinkfast import strict_json
from thinkfast.evaluate.engine import Evaluation, Series
from thinkfast.tables import format_number, format_significant, number_column, text_column


def write_report(evaluation: Evaluation, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``report.json`` atomically (temporary file + rename), strict JSON (a non-finite number is null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**(extra or {}), **evaluation.report()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(strict_json.dumps(data, indent=2) + "\n", encoding="utf-8")  # no NaN: strict parsers read it
    os.replace(tmp, path)


def _cell(series: Series, index: int) -> str:
    """``mean [low, high]`` in percent (the interval's ends, which need not be symmetric); the mean alone
    without an interval."""
    m, lo, hi = series.mean[index], series.low[index], series.high[index]
    if lo is None or hi is None:
        return format_number(100 * m, 1)
    return f"{format_number(100 * m, 1)} [{format_number(100 * lo, 1)}, {format_number(100 * hi, 1)}]"


def summary_tables(evaluation: Evaluation, confidence: float | None) -> list[Table]:
    """One table per dataset, a few rows per model: coverage (pass@k) and each aggregator's accuracy
    (``<label>@k``) at k = 1 and k = n, in %.

    Metrics are rows rather than columns, so the table has four columns however many aggregators
    there are and fits an 80-column terminal. ``confidence``: the level of the bootstrap intervals
    shown in brackets; None: no intervals.
    """
    interval = "" if confidence is None else f" [{100 * confidence:g}% bootstrap interval]"
    tables = []
    for dataset in dict.fromkeys(r.dataset for r in evaluation.results):
        table = Table(title=f"{dataset}: % correct{interval}", title_justify="left")
        text_column(table, "model")
        text_column(table, "metric")
        number_column(table, "k = 1")
        number_column(table, "k = n")
        for r in (r for r in evaluation.results if r.dataset == dataset):
            rows = [("pass@k", r.coverage), *((f"{label}@k", s) for label, s in r.accuracy.items())]
            seconds = "unknown" if r.seconds_per_sample is None else format_significant(r.seconds_per_sample)
            about = [r.model, f"{r.problems} problems, n = {r.n_samples}", f"{seconds} s/sample"]
            # the model's name and numbers go down the first column, one line per row while rows last
            about = [*about[:len(rows) - 1], "\n".join(about[len(rows) - 1:])]
            for i, (metric, series) in enumerate(rows):
                table.add_row(Text(about[i] if i < len(about) else ""), Text(metric), _cell(series, 0),
                              _cell(series, -1), end_section=i == len(rows) - 1)  # Text: labels are not markup
        tables.append(table)
    return tables


def print_summary(evaluation: Evaluation, confidence: float | None, console: Console | None = None) -> None:
    """Print the tables and one line on grading throughput."""
    console = console or Console(highlight=False)
    for table in summary_tables(evaluation, confidence):
        console.print(table)
    g = evaluation.grading
    rate = g["samples_per_second"]
    console.print(f"graded {g['samples']} samples in {format_number(g['seconds'], 1)} s"
                  + (f" ({format_number(rate)} samples/s, {g['workers']} workers)" if rate else "")
                  + (f"; {g['workers_killed']} check(s) killed at the {g['timeout_seconds']:g} s timeout"
                     if g["workers_killed"] else ""))
