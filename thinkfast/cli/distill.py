"""``thinkfast distill RECIPE``."""

from __future__ import annotations

from pathlib import Path

import click

from thinkfast.cli.options import resolve_output_dir, run_options
from thinkfast.config.loader import load_recipe
from thinkfast.errors import EngineUnavailableError


@click.command("distill")
@click.argument("recipe", type=click.Path(path_type=Path))
@run_options
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in the output directory.")
def command(recipe: Path, overrides: tuple[str, ...], output_dir: Path | None, resume: bool) -> None:
    """Distill a student from a teacher, running the stages of RECIPE in order.

    Writes checkpoints, metrics.jsonl and the final student (a model directory) to the output dir.
    """
    loaded = load_recipe(recipe, overrides)
    resolve_output_dir(loaded, output_dir)
    raise EngineUnavailableError("the distillation engine is not implemented yet; the recipe is valid")
