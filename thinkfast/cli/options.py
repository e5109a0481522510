"""Options shared by the run-type subcommands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
    help="Override a recipe value (repeatable). VALUE is TOML; a bare word is a string. "
         "Example: --set generate.n_samples=16",
)
output_dir_option = click.option(
    "--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Directory for this run's outputs. Default: run.output_dir from the recipe, else runs/<run.name>.",
)


def run_options(fn: Callable) -> Callable:
    """Add ``--set`` and ``--output-dir`` to a command."""
    return set_option(output_dir_option(fn))


def resolve_output_dir(recipe, output_dir: Path | None) -> Path:
    """The output directory: the flag, else the recipe's, else runs/<run name>."""
    if output_dir is not None:
        return output_dir
    if recipe.run.output_dir:
        return Path(recipe.run.output_dir)
    return Path("runs") / recipe.run.name
