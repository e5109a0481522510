"""What the evaluate and profile plots share: a paper's figure sizes and fonts, one PNG and one PDF per
figure, readable tick labels on logarithmic axes, a legend under the panels that fits the figure's width,
and one marker per model.

matplotlib is imported inside the functions: the recipe sections read this module's sizes and checks, and
loading a recipe must not cost matplotlib's import."""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

#: Marker of the i-th model (``MARKERS[i % len(MARKERS)]``), so that lines differ in grayscale and for
#: colour-blind readers, not only by colour.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

#: Width of a figure in one column of a two-column paper (ICML 3.25 in, ACL 3.3 in, IEEE 3.5 in), in inches.
COLUMN_WIDTH = 3.4
#: Width of a figure across both columns (ICML 6.75 in, ACL 6.3 in, IEEE 7.16 in), in inches.
FULL_WIDTH = 7.0
#: The narrowest and widest ``figure_width`` a recipe may ask for, in inches.
MIN_FIGURE_WIDTH, MAX_FIGURE_WIDTH = 2.0, 20.0
#: Panels side by side in one row; more go onto further rows.
PANELS_PER_ROW = 3
#: Height of one row of panels (the axes with its tick labels, axis label and title), in inches.
ROW_HEIGHT = 2.2
#: Height taken by the legend under the panels (one line of entries), in inches.
LEGEND_HEIGHT = 0.35
#: Text sizes at print size, in points: labels, titles and the legend; tick labels.
FONT_SIZE = 8.0
TICK_FONT_SIZE = 7.0
#: Resolution of the PNG copy (the PDF is vector), in dots per inch.
PNG_DPI = 300

FIGURE_WIDTH_HELP = (f"Width of every figure in inches, {MIN_FIGURE_WIDTH:g} to {MAX_FIGURE_WIDTH:g} (e.g. 5.5 "
                     f"for a one-column paper); 0: {COLUMN_WIDTH:g} (one column of a two-column paper) for a "
                     f"one-panel figure, {FULL_WIDTH:g} (both columns) for several panels.")

#: matplotlib settings of every figure: sizes for print (:func:`save_figure` embeds TrueType fonts).
PAPER_STYLE = {
    "font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE, "axes.labelsize": FONT_SIZE,
    "figure.titlesize": FONT_SIZE, "legend.fontsize": TICK_FONT_SIZE,
    "xtick.labelsize": TICK_FONT_SIZE, "ytick.labelsize": TICK_FONT_SIZE,
    "lines.linewidth": 1.2, "lines.markersize": 3.5, "axes.linewidth": 0.6, "grid.linewidth": 0.5,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.minor.width": 0.4, "ytick.minor.width": 0.4,
    "xtick.major.size": 3.0, "ytick.major.size": 3.0, "xtick.minor.size": 1.5, "ytick.minor.size": 1.5,
    "hatch.linewidth": 0.6,
    "figure.constrained_layout.h_pad": 0.03, "figure.constrained_layout.w_pad": 0.03,
}

#: Fraction of the figure's width a legend may take (the rest is margin).
_LEGEND_WIDTH = 0.96

Build = TypeVar("Build", bound=Callable[..., Any])


def check_figure_width(value: float) -> str | None:
    """Why ``figure_width`` (inches; 0 = automatic) cannot be used, or None when it can."""
    if value == 0 or MIN_FIGURE_WIDTH <= value <= MAX_FIGURE_WIDTH:
        return None
    return (f"{value:g} in is not a figure width; give inches from {MIN_FIGURE_WIDTH:g} to {MAX_FIGURE_WIDTH:g} "
            f"(e.g. {COLUMN_WIDTH:g} for a column, {FULL_WIDTH:g} for a page), or 0 for the automatic width")


def in_paper_style(build: Build) -> Build:
    """Run a figure-building function under :data:`PAPER_STYLE`, so every text it creates has print sizes."""
    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context(PAPER_STYLE):
            return build(*args, **kwargs)
    return wrapper


def panel_figure(panels: int, width: float = 0.0, extra_height: float = 0.0) -> tuple[Any, list]:
    """A figure of ``panels`` axes sharing their x and y axes, up to :data:`PANELS_PER_ROW` a row.

    ``width`` in inches, 0: :data:`COLUMN_WIDTH` for one panel, :data:`FULL_WIDTH` for more. The height is
    :data:`ROW_HEIGHT` per row plus :data:`LEGEND_HEIGHT` and ``extra_height`` (a suptitle, in inches).
    Returns the figure (Agg canvas, constrained layout, not registered with pyplot, so nothing needs
    closing) and its axes, row by row (:func:`panel_grid`). Call it under :func:`in_paper_style`. Tick
    labels are shown on the left column and wherever no panel sits below.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = panel_grid(panels)
    width = width or (COLUMN_WIDTH if panels == 1 else FULL_WIDTH)
    fig = Figure(figsize=(width, rows * ROW_HEIGHT + LEGEND_HEIGHT + extra_height), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[panels:]:
        fig.delaxes(ax)
    axes = axes[:panels]
    for i, ax in enumerate(axes):
        # lazily created ticks read rcParams when the figure is drawn, outside the style: fix their sizes here
        ax.tick_params(which="both", labelsize=TICK_FONT_SIZE)
        if not has_panel_below(panels, i):
            ax.xaxis.set_tick_params(which="both", labelbottom=True)
    return fig, axes


def panel_grid(panels: int) -> tuple[int, int]:
    """Rows and columns of :func:`panel_figure`: the fewest rows of at most :data:`PANELS_PER_ROW`, filled
    evenly (4 panels are 2 x 2, not 3 + 1)."""
    rows = math.ceil(panels / PANELS_PER_ROW)
    return rows, math.ceil(panels / rows)


def has_panel_below(panels: int, index: int) -> bool:
    """Whether, of ``panels`` laid out by :func:`panel_figure`, another sits under the ``index``-th one."""
    return index + panel_grid(panels)[1] < panels


def starts_row(panels: int, index: int) -> bool:
    """Whether the ``index``-th of ``panels`` laid out by :func:`panel_figure` is the first of its row."""
    return index % panel_grid(panels)[1] == 0


def panel_width(fig: Any, panels: int) -> float:
    """The width of one of ``panels`` panels in ``fig`` (:func:`panel_figure`), labels included, in inches."""
    return fig.get_figwidth() / panel_grid(panels)[1]


def save_figure(fig: Any, png: Path) -> list[Path]:
    """Write ``fig`` as ``png`` (:data:`PNG_DPI`) and as a vector PDF beside it (same name, ``.pdf``), at
    the figure's own size (no tight cropping); returns both paths.

    The PDF embeds its fonts as TrueType (``pdf.fonttype`` 42): matplotlib's default, Type 3, is refused
    by many conference paper checkers and does not select as text.
    """
    import matplotlib

    png.parent.mkdir(parents=True, exist_ok=True)
    pdf = png.with_suffix(".pdf")
    with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
        fig.savefig(png, dpi=PNG_DPI)
        fig.savefig(pdf)
    return [png, pdf]


def figure_paths(png: Path) -> list[Path]:
    """The files :func:`save_figure` writes for ``png``: the PNG and the PDF."""
    return [png, png.with_suffix(".pdf")]


def plain_number(value: float, _position: Any = None) -> str:
    """A tick label without powers of ten: 0.05, 2, 500, 20,000."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:g}"


def plain_log_ticks(axis: Any) -> None:
    """Label a log-scaled ``axis`` (``ax.xaxis``/``ax.yaxis``, after plotting) with plain numbers.

    Ticks at 1, 2 and 5 times powers of ten over up to 2.5 decades (a narrower range gets
    matplotlib's evenly spaced ticks), at powers of ten over up to 8 decades, beyond that at every
    few powers of ten; minor ticks stay unlabelled, so labels never run into each other.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

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


def spaced_tick_labels(fig: Any, axis: Any, values: list[float]) -> None:
    """Major ticks, labelled as plain numbers, at ``values`` (ascending) on ``axis``, or at every 2nd, 4th...
    of them when the labels would run into each other at the figure's size; the others stay as unlabelled
    minor ticks. Call it once everything else is drawn on the figure (it lays the figure out to measure)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    step = 1
    while True:
        shown = values[::step]
        axis.set_major_locator(FixedLocator(shown))
        axis.set_minor_locator(FixedLocator([v for v in values if v not in shown]))
        axis.set_major_formatter(FuncFormatter(plain_number))
        axis.set_minor_formatter(NullFormatter())
        if len(shown) <= 2 or not _tick_labels_overlap(fig, axis):
            return
        step *= 2


def _tick_labels_overlap(fig: Any, axis: Any) -> bool:
    fig.draw_without_rendering()  # the constrained layout places the axes: their final width
    renderer = fig.canvas.get_renderer()
    low, high = sorted(axis.get_view_interval())
    labels = [t for loc, t in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=False)
              if low <= loc <= high and t.get_text()]
    horizontal = axis.axis_name == "x"
    boxes = sorted((b.x0, b.x1) if horizontal else (b.y0, b.y1)
                    for b in (t.get_window_extent(renderer) for t in labels))
    gap = 2.0 * fig.dpi / 72  # 2 points between labels at the least
    return any(end + gap > start for (_, end), (start, _) in zip(boxes, boxes[1:], strict=False))


def wrap_to_width(text: str, inches: float, fontsize: float = FONT_SIZE) -> str:
    """``text`` wrapped into lines that fit ``inches`` at ``fontsize`` points (0.6 em a character, on
    the safe side for DejaVu Sans)."""
    return textwrap.fill(text, width=max(8, int(inches * 72 / (0.6 * fontsize))))
