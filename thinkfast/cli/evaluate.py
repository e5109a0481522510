"""``thinkfast evaluate [RECIPE]``."""

from __future__ import annotations

from pathlib import Path

import click

from thinkfast.cli.options import resolve_output_dir, run_options
from thinkfast.config.loader import load_recipe
from thinkfast.errors import EngineUnavailableError


@click.command("evaluate")
@click.argument("recipe", type=click.Path(path_type=Path), required=False)
@run_options
def command(recipe: Path | None, overrides: tuple[str, ...], output_dir: Path | None) -> None:
    """Grade samples and report coverage and accuracy against samples and seconds."""
    loaded = load_recipe(recipe, overrides)
    resolve_output_dir(loaded, output_dir)
    raise EngineUnavailableError("the evaluation engine is not implemented yet; the recipe is valid")
