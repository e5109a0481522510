"""Columns for the rich tables the subcommands print, so that they stay readable at 80 columns.

A narrow terminal makes rich shrink columns. Text columns (names, reasons) then wrap at spaces
and fold long words onto the next line instead of cutting them off with an ellipsis; number
columns never wrap, so a number is always whole. Tables keep their number columns few enough
to fit 80 columns, and put what varies in length (model names, reasons) in text columns.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table


def text_column(table: Table, header: str, **options: Any) -> None:
    """A left-aligned column that wraps and folds (never an ellipsis)."""
    table.add_column(header, overflow="fold", **options)


def number_column(table: Table, header: str, **options: Any) -> None:
    """A right-aligned column that never wraps (break a long header with ``\\n``: ``"peak\\nmemory"``)."""
    table.add_column(header, justify="right", no_wrap=True, **options)
