"""``thinkfast recipe validate|show``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from thinkfast.cli import ThinkfastGroup
from thinkfast.cli.options import RECIPE_PATH, set_option
from thinkfast.config.loader import load_recipe
from thinkfast.config.toml_writer import dumps
from thinkfast.config.validate import check_input_files, to_dict

console = Console(highlight=False)


@click.group("recipe", cls=ThinkfastGroup)  # its subcommands' errors are one line too
def command() -> None:
    """Check a recipe, or print it fully resolved."""


@command.command("validate")
@click.argument("recipe", type=RECIPE_PATH)
@set_option
def validate(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Check RECIPE (a TOML file): every key, type, range and plugin name, and that the data files it
    names (data.path, data.responses) and a .gguf teacher (teacher.model) exist.

    Exits 0 when it is valid and 2 with one message per problem otherwise; the files are checked once
    every key and value is valid.
    """
    loaded = load_recipe(recipe, overrides)
    check_input_files(loaded, source=loaded.source, overrides=loaded.override_spans)
    console.print(f"{recipe}: valid")


@command.command("show")
@click.argument("recipe", type=RECIPE_PATH)
@set_option
def show(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Print RECIPE with includes merged, overrides applied and every default filled in (TOML)."""
    resolved = to_dict(load_recipe(recipe, overrides))
    resolved.pop("include", None)  # already merged in
    click.echo(dumps(resolved), nl=False)
