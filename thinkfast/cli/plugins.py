"""``thinkfast plugins``: what is installed, from which package, and what failed to load."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from thinkfast.registry import get_registry
from thinkfast.tables import text_column

console = Console(highlight=False)


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """List plugins by family: name, providing package and version, and load errors."""
    registry = get_registry(announce=as_json)  # the table lists the load errors below it: not twice
    entries = [
        {"family": e.family, "name": e.name, "package": e.package, "version": e.version, "module": e.module}
        for e in registry.all_entries()
    ]
    errors = [
        {"entry_point": e.entry_point, "package": e.package, "version": e.version, "error": e.error}
        for e in registry.load_errors
    ]
    if as_json:
        click.echo(json.dumps({"plugins": entries, "load_errors": errors}, indent=2))
        return
    table = Table(title="thinkfast plugins")
    for column in ("family", "name", "package", "version", "module"):
        text_column(table, column)
    for e in entries:
        table.add_row(e["family"], e["name"], e["package"], e["version"], e["module"])
    console.print(table)
    for e in registry.load_errors:
        console.print("[yellow]warning:[/yellow] ", end="")
        console.print(e.describe(), markup=False)
