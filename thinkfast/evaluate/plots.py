"""PNG plots of coverage and accuracy against samples (k) and against wall-clock seconds.

One line per model (its own colour and marker), a shaded band for its bootstrap interval (none with
``evaluate.bootstrap = 0``).
Per dataset four files:
``<dataset>-coverage-vs-k.png``, ``<dataset>-accuracy-vs-k.png`` (one panel per aggregator),
``<dataset>-coverage-vs-seconds.png`` and ``<dataset>-accuracy-vs-seconds.png`` (log x).
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from thinkfast.evaluate.engine import ModelResult, Series  # noqa: E402
from thinkfast.plotting import MARKERS, legend_below, plain_log_ticks  # noqa: E402


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
    ax.plot(xs, ys, marker=marker, markersize=4, linewidth=1.6, color=color, label=label, clip_on=False,
            zorder=3)
    if all(v is not None for v in (*series.low, *series.high)):  # no band without bootstrap intervals
        ax.fill_between(xs, [100 * v for v in series.low], [100 * v for v in series.high], color=color,
                        alpha=0.18, linewidth=0)
    return True


def _axes_style(ax, by_seconds: bool, ylabel: str, title: str) -> None:
    if by_seconds:
        ax.set_xscale("log")
        ax.set_xlabel("wall-clock seconds per problem (log scale)")
        plain_log_ticks(ax.xaxis)
    else:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("samples per problem, k")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)


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


def figure(results: list[ModelResult], metric: str, by_seconds: bool, dataset: str) -> Figure | None:
    """The plot of ``metric`` (``coverage`` or ``accuracy``) against k or seconds; None with nothing to draw."""
    import matplotlib.pyplot as plt

    panels = ["coverage"] if metric == "coverage" else list(dict.fromkeys(a for r in results for a in r.accuracy))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), squeeze=False, sharey=True,
                             layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn_any = False
    untimed: dict[str, Line2D] = {}  # models without seconds: named in the legend, not silently missing
    for ax, panel in zip(axes[0], panels, strict=True):
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
        _axes_style(ax, by_seconds, "coverage (%)" if panel == "coverage" else "accuracy (%)", title)
    if not drawn_any:
        plt.close(fig)
        return None
    _percent_limits(axes[0][0])  # the panels share their y axis
    entries: dict = {}  # label -> line, over every panel
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    for model, handle in untimed.items():
        if model not in entries:  # drawn in no panel
            entries[handle.get_label()] = handle
    # under the panels, where it hides no point or band
    legend_below(fig, list(entries.values()), list(entries), 3, fontsize=9)
    return fig


def write_plots(results: list[ModelResult], out_dir: Path) -> list[Path]:
    """Write every plot for every dataset in ``results``; returns the files written."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset in dict.fromkeys(r.dataset for r in results):
        group = [r for r in results if r.dataset == dataset]
        for metric in ("coverage", "accuracy"):
            for by_seconds in (False, True):
                fig = figure(group, metric, by_seconds, dataset)
                if fig is None:
                    continue
                written.append(out_dir / f"{_safe(dataset)}-{metric}-vs-{'seconds' if by_seconds else 'k'}.png")
                fig.savefig(written[-1], dpi=150)
                plt.close(fig)
    return written
