"""``thinkfast generate [RECIPE]``."""

from __future__ import annotations

from pathlib import Path

import click

from thinkfast.cli.options import resolve_output_dir, run_options
from thinkfast.config.loader import load_recipe
from thinkfast.errors import EngineUnavailableError


@click.command("generate")
@click.argument("recipe", type=click.Path(path_type=Path), required=False)
@run_options
def command(recipe: Path | None, overrides: tuple[str, ...], output_dir: Path | None) -> None:
    """Sample n answers per problem with a model; write samples.jsonl and run.json."""
    loaded = load_recipe(recipe, overrides)
    resolve_output_dir(loaded, output_dir)
    raise EngineUnavailableError("the generation engine is not implemented yet; the recipe is valid")
