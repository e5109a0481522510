"""Columns for the rich tables the subcommands print, so that they stay readable at 80 columns.

A narrow terminal makes rich shrink columns. Text columns (names, reasons) then wrap at spaces
and fold long words onto the next line instead of cutting them off with an ellipsis; number
columns never wrap, so a number is always whole. Tables keep their number columns few enough
to fit 80 columns, and put what varies in length (model names, reasons) in text columns.
"""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table


def text_column(table: Table, header: str, **options: Any) -> None:
    """A left-aligned column that wraps and folds (never an ellipsis)."""
    table.add_column(header, overflow="fold", **options)


def number_column(table: Table, header: str, **options: Any) -> None:
    """A right-aligned column that never wraps (break a long header with ``\\n``: ``"peak\\nmemory"``)."""
    table.add_column(header, justify="right", no_wrap=True, **options)


def format_number(value: float, decimals: int = 0) -> str:
    """``value`` with ``decimals`` decimals and thousands separators (``1,826``, ``151.26``). A value that is
    not zero but would show as 0 at that precision gets two significant digits instead (``0.42``,
    ``0.0031``), so a slow rate reads as slow rather than as nothing; never scientific notation."""
    if value != 0 and abs(value) < 0.5 * 10 ** -decimals:
        return format_significant(value, 2)
    return f"{value:,.{decimals}f}"


def format_significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, trailing zeros dropped, without scientific notation:
    ``0.0123``, ``0.42``, ``12.3``, ``1,235`` (a number of ``digits`` digits or more shows whole, with
    thousands separators)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    exponent = math.floor(math.log10(abs(value)))
    text = f"{value:,.{max(digits - 1 - exponent, 0)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
