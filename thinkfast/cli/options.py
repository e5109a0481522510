"""Options shared by the run-type subcommands."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from thinkfast.cli.param_types import PathOf
from thinkfast.config.common import RunSection
from thinkfast.errors import OutputDirError

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
    help="Override a recipe value (repeatable). VALUE is TOML; a bare word is a string. "
         "Example: --set generate.n_samples=16",
)
#: The type of every command's RECIPE argument: a path, not the empty string (which would name the current
#: directory).
RECIPE_PATH = PathOf("the path of a .toml recipe file", path_type=Path)
output_dir_option = click.option(
    "--output-dir", "-o", type=PathOf("a directory (. for the current one)", file_okay=False, path_type=Path),
    default=None,
    help="Directory for this run's outputs. Default: run.output_dir from the recipe, else runs/<run.name>, "
         "else (no run.name) runs/<subcommand>.",
)


def flag_name(name: str) -> str:
    """The running command's option ``name`` (its Python name, ``data_path``) as messages spell it:
    ``--data-path``, ``--n/--n-samples``; a recipe problem at the key it set names it so."""
    from thinkfast.cli.usage_errors import param_name

    command = click.get_current_context().command
    return next(param_name(p) for p in command.params if isinstance(p, click.Option) and p.name == name)


def run_options(fn: Callable) -> Callable:
    """Add ``--set`` and ``--output-dir`` to a command."""
    return set_option(output_dir_option(fn))


def resolve_output_dir(recipe, output_dir: Path | None, command: str) -> Path:
    """The output directory: the flag, else the recipe's, else runs/<run name>, else (the run keeps the
    default name) runs/<command>, so that e.g. ``generate`` and ``evaluate`` without a recipe do not
    write into one directory."""
    if output_dir is not None:
        return output_dir
    if recipe.run.output_dir:
        return Path(recipe.run.output_dir)
    named = recipe.run.name != RunSection().name
    return Path("runs") / (recipe.run.name if named else command)


@contextmanager
def output_directory(path: Path) -> Iterator[Path]:
    """Create the output directory ``path`` (and its missing parents) before any work is done.

    Every run-type subcommand runs inside this. A directory that cannot be created or written to
    is an :class:`~thinkfast.errors.OutputDirError` (one message, exit 2) before anything is loaded
    or measured. When the command then fails, the directories this call created are removed again
    if they are still empty, so a failed start leaves nothing behind; anything written is kept.
    """
    created = make_output_dir(path)
    try:
        yield path
    except BaseException:
        remove_if_empty(created)
        raise


def make_output_dir(path: Path) -> list[Path]:
    """``mkdir -p path`` and check that a file can be written in it; returns the directories it created
    (deepest first). Raises :class:`OutputDirError` naming ``path`` and the reason."""
    missing: list[Path] = []
    absolute = Path(os.path.abspath(path))  # "a/../b" creates only b, as the list below says
    parent = absolute
    while not parent.exists() and parent.parent != parent:
        missing.append(parent)
        parent = parent.parent
    doing = "create"
    try:
        absolute.mkdir(parents=True, exist_ok=True)
        doing = "write to"
        fd, name = tempfile.mkstemp(prefix=".thinkfast-write-check-", dir=path)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        remove_if_empty(missing)
        raise OutputDirError(f"cannot {doing} output directory {path}: {_reason(path, exc)}; choose another "
                             f"--output-dir (or run.output_dir)") from None
    return missing


def _reason(path: Path, exc: OSError) -> str:
    """Why ``path`` could not be made a writable directory, in words."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return "a file of that name exists" if existing == path else f"{existing} is a file, not a directory"
    reason = exc.strerror or str(exc)
    return reason[:1].lower() + reason[1:]


def remove_if_empty(directories: list[Path]) -> None:
    """Remove each of ``directories`` (deepest first) that is empty; the others, and errors, are left alone."""
    for directory in directories:
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return  # not empty: its parents are not empty either
