"""Columns for the rich tables the subcommands print, so that they stay readable at 80 columns.

A narrow terminal makes rich shrink columns. Text columns (names, reasons) then wrap at spaces
and fold long words onto the next line instead of cutting them off with an ellipsis; number
columns never wrap, so a number is always whole. Tables keep their number columns few enough
to fit 80 columns, and put what varies in length (model names, reasons) in text columns.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from rich.table import Table


def text_column(table: Table, header: str, **options: Any) -> None:
    """A left-aligned column that wraps and folds (never an ellipsis)."""
    table.add_column(header, overflow="fold", **options)


def number_column(table: Table, header: str, **options: Any) -> None:
    """A right-aligned column that never wraps (break a long header with ``\\n``: ``"peak\\nmemory"``)."""
    table.add_column(header, justify="right", no_wrap=True, **options)


def format_number(value: float, decimals: int = 0) -> str:
    """``value`` with ``decimals`` decimals and thousands separators (``1,826``, ``151.26``), halves rounded up
    (:func:`round_half_up`). A value that is not zero but would show as 0 at that precision gets two significant
    digits instead (``0.42``, ``0.0031``), so a slow rate reads as slow rather than as nothing; never scientific
    notation."""
    if value != 0 and abs(value) < 0.5 * 10 ** -decimals:
        return format_significant(value, 2)
    return round_half_up(value, decimals)


def format_significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, halves rounded up, trailing zeros dropped, without scientific
    notation: ``0.0123``, ``0.42``, ``12.3``, ``1,235`` (a number of ``digits`` digits or more shows whole, with
    thousands separators)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    exponent = math.floor(math.log10(abs(value)))
    text = round_half_up(value, max(digits - 1 - exponent, 0))
    return text.rstrip("0").rstrip(".") if "." in text else text


def round_half_up(value: float, decimals: int) -> str:
    """``value`` to ``decimals`` decimals with thousands separators, a half rounded away from zero as a reader
    rounds it (``6.25`` -> ``6.3``, ``0.5`` -> ``1``; Python's formatting rounds half to even: ``6.2``, ``0``).

    The float is read at 15 significant digits first, so that a product such as ``100 * 0.0725``
    (``7.249999999999999``) rounds as the ``7.25`` it stands for."""
    if not math.isfinite(value):
        return f"{value:,.{decimals}f}"
    exact = Decimal(f"{value:.15g}")
    with localcontext() as context:
        context.prec = max(28, exact.adjusted() + decimals + 2)
        rounded = exact.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return f"{rounded:,.{decimals}f}"
