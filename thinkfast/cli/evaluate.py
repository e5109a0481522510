"""``thinkfast evaluate [RECIPE] [--runs DIR ...] [--aggregator NAME ...]``."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console

from thinkfast.cli.options import output_directory, resolve_output_dir, run_options
from thinkfast.cli.param_types import FloatRange
from thinkfast.config.loader import load_recipe
from thinkfast.plotting import FIGURE_WIDTH_HELP
from thinkfast.progress import sample_progress


@click.command("evaluate")
@click.argument("recipe", type=click.Path(path_type=Path), required=False)
@click.option("--runs", "runs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A `thinkfast generate` output directory (repeatable, one per model); replaces evaluate.runs.")
@click.option("--aggregator", "aggregators", multiple=True, metavar="NAME",
              help="Aggregator plugin with default options (repeatable); replaces evaluate.aggregators.")
@click.option("--common-problems/--all-problems", default=None,
              help="Evaluate every run on the problems all runs completed (evaluate.common_problems).")
@click.option("--figure-width", type=FloatRange(min=0.0), default=None, metavar="INCHES",
              help=f"{FIGURE_WIDTH_HELP} Sets evaluate.figure_width.")
@run_options
def command(recipe: Path | None, runs: tuple[Path, ...], aggregators: tuple[str, ...], common_problems: bool | None,
            figure_width: float | None, overrides: tuple[str, ...], output_dir: Path | None) -> None:
    """Grade samples and report coverage and accuracy against samples and seconds.

    Writes report.json, grades.jsonl (the grading cache) and the plots, each as a PNG and a PDF, to
    the output directory and prints a summary table.
    """
    from thinkfast.evaluate.engine import REPORT_FILE, evaluate
    from thinkfast.evaluate.plots import write_plots
    from thinkfast.evaluate.report import print_summary, write_report

    extra: dict = {}
    if runs:
        extra["runs"] = [str(r) for r in runs]
    if aggregators:
        extra["aggregators"] = [{"name": name} for name in aggregators]
    if common_problems is not None:
        extra["common_problems"] = common_problems
    if figure_width is not None:
        extra["figure_width"] = figure_width
    loaded = load_recipe(recipe, overrides, extra={"evaluate": extra} if extra else None)
    section = loaded.evaluate
    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console.width = 160
    with output_directory(resolve_output_dir(loaded, output_dir, "evaluate")) as out:
        with sample_progress("grade", console, disable=not console.is_terminal, transient=True) as progress:
            task = progress.add_task("grade", total=None, rate="")

            def on_graded(done: int, total: int) -> None:
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=done, total=total, rate=f"{rate:,.0f} samples/s")

            started = time.perf_counter()
            evaluation = evaluate(section, list(section.runs), output_dir=out, seed=loaded.run.seed,
                                  on_graded=on_graded)
        for warning in evaluation.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
        write_report(evaluation, out / REPORT_FILE, extra={"recipe": loaded.source, "seed": loaded.run.seed})
        print_summary(evaluation, section.confidence if section.bootstrap else None, console)
        if section.plots:
            for path in write_plots(evaluation.results, out, section.figure_width):
                console.print(f"wrote {path}")
    console.print(f"wrote {out / REPORT_FILE}")
