"""What the evaluate and profile plots share: readable tick labels on logarithmic axes, a legend under
the panels that fits the figure's width, and one marker per model."""

from __future__ import annotations

import math
import textwrap
from typing import Any

from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

#: Marker of the i-th model (``MARKERS[i % len(MARKERS)]``), so that lines differ in grayscale and for
#: colour-blind readers, not only by colour.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

#: Fraction of the figure's width a legend may take (the rest is margin).
_LEGEND_WIDTH = 0.96


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


def legend_below(fig: Any, handles: list, labels: list[str], max_cols: int, **options: Any) -> Any:
    """A legend under the panels (where it hides no point) that fits the figure's width.

    It starts with ``max_cols`` columns (at most one per entry) and drops columns while it is wider than
    the figure; if one column is still too wide, the longest labels (model names, run paths) are
    wrapped onto several lines, so that no label is cut off at the figure's edge.
    """
    renderer = fig.canvas.get_renderer()
    limit = _LEGEND_WIDTH * fig.bbox.width
    ncols = max(1, min(len(handles), max_cols))
    texts = list(labels)
    while True:
        legend = fig.legend(handles, texts, loc="outside lower center", ncols=ncols, frameon=False, **options)
        width = legend.get_window_extent(renderer).width
        longest = max((len(line) for text in texts for line in text.splitlines()), default=0)
        if width <= limit or (ncols == 1 and longest <= 8):
            return legend
        legend.remove()
        if ncols > 1:
            ncols -= 1
            continue
        chars = max(8, min(longest - 1, int(longest * limit / width)))  # one column, still too wide: wrap
        texts = ["\n".join(textwrap.wrap(label, chars)) or label for label in labels]
