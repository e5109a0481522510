"""Plots of coverage and accuracy against samples (k) and against wall-clock seconds, each as a PNG and
a vector PDF of the same figure.

One line per model (its own colour and marker), a shaded band for its bootstrap interval (none with
``evaluate.bootstrap = 0``).
Per dataset four figures, each written as ``.png`` and ``.pdf``:
``<dataset>-coverage-vs-k``, ``<dataset>-accuracy-vs-k`` (one panel per aggregator),
``<dataset>-coverage-vs-seconds`` and ``<dataset>-accuracy-vs-seconds`` (log x).
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from thinkfast.evaluate.engine import ModelResult, Series
from thinkfast.plotting import (
    MARKERS,
    figure_paths,
    has_panel_below,
    in_paper_style,
    legend_below,
    panel_figure,
    panel_width,
    plain_log_ticks,
    save_figure,
    starts_row,
    wrap_to_width,
)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "dataset"


def _draw(ax, series: Series, label: str, color, marker: str, by_seconds: bool) -> bool:
    """One line with its band; False when the x values (seconds) are unknown.

    The line is drawn over the axes' frame and not clipped by it, so that a model at 0 % (or 100 %), on the
    edge of the y range, shows its whole line and markers instead of half of them behind the frame.
    """
    xs = series.seconds if by_seconds else series.ks
    if any(x is None for x in xs):
        return False
    ys = [100 * v for v in series.mean]
    ax.plot(xs, ys, marker=marker, color=color, label=label, clip_on=False, zorder=3)
    if all(v is not None for v in (*series.low, *series.high)):  # no band without bootstrap intervals
        ax.fill_between(xs, [100 * v for v in series.low], [100 * v for v in series.high], color=color,
                        alpha=0.18, linewidth=0)
    return True


def _x_scale(ax, by_seconds: bool) -> None:
    """Log x (base 2 for k), ticks labelled as plain numbers; the panels share it, so once is enough."""
    if by_seconds:
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
    else:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())


#: The smallest y range a plot shows, in percentage points: without it a model at 0 % everywhere is drawn
#: on an axis from -0.04 to 0.04 %, which reads as noise.
MIN_PERCENT_SPAN = 5.0


def _percent_limits(ax) -> None:
    """Keep the y axis (percent) inside 0..100 and at least :data:`MIN_PERCENT_SPAN` points tall."""
    low, high = ax.get_ylim()
    low, high = max(low, 0.0), min(high, 100.0)
    missing = MIN_PERCENT_SPAN - (high - low)
    if missing > 0:
        low = max(0.0, low - missing / 2)
        high = min(100.0, low + MIN_PERCENT_SPAN)
        low = high - MIN_PERCENT_SPAN
    ax.set_ylim(low, high)


@in_paper_style
def figure(results: list[ModelResult], metric: str, by_seconds: bool, dataset: str,
           width: float = 0.0) -> Figure | None:
    """The plot of ``metric`` (``coverage`` or ``accuracy``) against k or seconds; None with nothing to draw.

    ``width``: the figure's width in inches (0: one column of a paper for one panel, the full page for
    several). The panels (one per aggregator) share both axes, so that their lines compare at a glance.
    """
    panels = ["coverage"] if metric == "coverage" else list(dict.fromkeys(a for r in results for a in r.accuracy))
    if not panels:
        return None
    fig, axes = panel_figure(len(panels), width)
    width_of_panel = panel_width(fig, len(panels))
    colors = [f"C{i}" for i in range(10)]
    drawn_any = False
    untimed: dict[str, Line2D] = {}  # models without seconds: named in the legend, not silently missing
    for index, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        for i, r in enumerate(results):
            series = r.coverage if panel == "coverage" else r.accuracy.get(panel)
            style = {"color": colors[i % len(colors)], "marker": MARKERS[i % len(MARKERS)]}
            if series is None:
                continue
            if _draw(ax, series, r.model, style["color"], style["marker"], by_seconds):
                drawn_any = True
            else:
                untimed.setdefault(r.model, Line2D([], [], linestyle="none", alpha=0.5, **style,
                                                   label=f"{r.model} (no timings: not drawn)"))
        title = f"{dataset}: coverage (pass@k)" if panel == "coverage" else f"{dataset}: {panel}"
        ax.set_title(wrap_to_width(title, 0.9 * width_of_panel))
        if not has_panel_below(len(axes), index):
            xlabel = "wall-clock seconds per problem (log scale)" if by_seconds else "samples per problem, k"
            ax.set_xlabel(wrap_to_width(xlabel, 0.85 * width_of_panel))
        if starts_row(len(axes), index):
            ax.set_ylabel("coverage (%)" if panel == "coverage" else "accuracy (%)")
        ax.grid(True, which="major", alpha=0.3)
    if not drawn_any:
        return None
    _x_scale(axes[0], by_seconds)  # the panels share their axes
    _percent_limits(axes[0])
    entries: dict = {}  # label -> line, over every panel
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    for model, handle in untimed.items():
        if model not in entries:  # drawn in no panel
            entries[handle.get_label()] = handle
    # under the panels, where it hides no point or band
    legend_below(fig, list(entries.values()), list(entries), 3)
    return fig


def write_plots(results: list[ModelResult], out_dir: Path, width: float = 0.0) -> list[Path]:
    """Write every plot for every dataset in ``results``, each as a PNG and a PDF (``width`` in inches, 0:
    automatic, see :func:`figure`); returns the files written, each PNG followed by its PDF. A plot with
    nothing to draw (no run has timings) removes an earlier report's files of that name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset in dict.fromkeys(r.dataset for r in results):
        group = [r for r in results if r.dataset == dataset]
        for metric in ("coverage", "accuracy"):
            for by_seconds in (False, True):
                fig = figure(group, metric, by_seconds, dataset, width)
                png = out_dir / f"{_safe(dataset)}-{metric}-vs-{'seconds' if by_seconds else 'k'}.png"
                if fig is not None:
                    written += save_figure(fig, png)
                else:  # nothing to draw: an earlier report's figure of that name would no longer be true
                    for path in figure_paths(png):
                        path.unlink(missing_ok=True)
    return written
