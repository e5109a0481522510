"""``thinkfast distill RECIPE``."""

from __future__ import annotations

from pathlib import Path

import click

from thinkfast.cli.options import RECIPE_PATH, output_directory, resolve_output_dir, run_options
from thinkfast.config.loader import load_recipe


@click.command("distill")
@click.argument("recipe", type=RECIPE_PATH)
@run_options
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in the output directory.")
@click.option("--progress/--no-progress", default=None,
              help="Show progress: a bar in a terminal, a line now and then in a log (default: the recipe's "
                   "distill.progress).")
def command(recipe: Path, overrides: tuple[str, ...], output_dir: Path | None, resume: bool,
            progress: bool | None) -> None:
    """Distill a student from a teacher, running the stages of RECIPE in order.

    Writes checkpoints/, metrics.jsonl and the final student (a model directory, student/) to the
    output dir. On several GPUs: torchrun --nproc-per-node N -m thinkfast distill RECIPE.
    """
    from thinkfast.cli import err_console
    from thinkfast.cli.ranks import is_main_rank
    from thinkfast.distill.engine import run_distill

    loaded = load_recipe(recipe, overrides)
    with output_directory(resolve_output_dir(loaded, output_dir, "distill")) as out:
        student = run_distill(loaded, out, resume=resume, progress=progress, console=err_console)
    if is_main_rank():  # rank 0 writes the student
        click.echo(f"student written to {student}")
