"""What the evaluate and profile plots share: readable tick labels on logarithmic axes."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter


def plain_number(value: float, _position: Any = None) -> str:
    """A tick label without powers of ten: 0.05, 2, 500, 20,000."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:g}"


def plain_log_ticks(axis: Any) -> None:
    """Label a log-scaled ``axis`` (``ax.xaxis``/``ax.yaxis``, after plotting) with plain numbers.

    Ticks at 1, 2 and 5 times powers of ten over up to 2.5 decades (a narrower range gets
    matplotlib's evenly spaced ticks), at powers of ten over up to 8 decades, beyond that at every
    few powers of ten; minor ticks stay unlabelled, so labels never run into each other.
    """
    low, high = sorted(axis.get_view_interval())
    decades = math.log10(high / low) if low > 0 else math.inf
    subs = (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,) if decades <= 8 else None
    axis.set_major_locator(LogLocator(base=10, subs=subs) if subs else LogLocator(base=10))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(NullFormatter())
