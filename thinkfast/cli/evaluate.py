"""``thinkfast evaluate [RECIPE] [--runs DIR ...] [--aggregator NAME ...]``."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console

from thinkfast.cli.options import RECIPE_PATH, flag_name, output_directory, resolve_output_dir, run_options
from thinkfast.cli.param_types import FloatRange, PathOf, Text
from thinkfast.cli.usage_errors import CommandLineError
from thinkfast.config.loader import load_recipe
from thinkfast.plotting import FIGURE_WIDTH_HELP
from thinkfast.progress import sample_progress
from thinkfast.tables import format_number


def _check_distinct(aggregators: tuple[str, ...]) -> None:
    """Each ``--aggregator`` once: the report names an aggregator by its plugin name, and two of one plugin
    need distinct labels, which only a recipe can give."""
    twice = sorted({name for name in aggregators if aggregators.count(name) > 1})
    if twice:
        raise CommandLineError(f"--aggregator: {', '.join(map(repr, twice))} given twice; name each aggregator "
                               f"once (two of one plugin need distinct labels: list them in evaluate.aggregators)")


@click.command("evaluate")
@click.argument("recipe", type=RECIPE_PATH, required=False)
@click.option("--runs", "runs", multiple=True,
              type=PathOf("a `thinkfast generate` output directory", file_okay=False, path_type=Path),
              help="A `thinkfast generate` output directory (repeatable, one per model); replaces evaluate.runs.")
@click.option("--aggregator", "aggregators", multiple=True, metavar="NAME",
              type=Text("an aggregators plugin name (see thinkfast plugins), or leave the flag out for "
                        "evaluate.aggregators"),
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

    _check_distinct(aggregators)
    given = {"runs": list(map(str, runs)) or None, "common_problems": common_problems, "figure_width": figure_width,
             "aggregators": [{"name": name} for name in aggregators] or None}
    extra = {key: value for key, value in given.items() if value is not None}
    flags = {f"evaluate.{key}": flag_name(key) for key in extra}
    flags.update({f"evaluate.aggregators[{i}].name": flag_name("aggregators") for i in range(len(aggregators))})
    loaded = load_recipe(recipe, overrides, extra={"evaluate": extra} if extra else None, flags=flags)
    section = loaded.evaluate
    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console.width = 160
    with output_directory(resolve_output_dir(loaded, output_dir, "evaluate")) as out:
        with sample_progress("grade", console, disable=not console.is_terminal, transient=True) as progress:
            task = progress.add_task("grade", total=None, rate="")

            def on_graded(done: int, total: int) -> None:
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=done, total=total, rate=f"{format_number(rate)} samples/s")

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
