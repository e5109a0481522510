"""``profile.png`` and ``profile.pdf``: decode tokens/s against batch size, one line per model, one panel
per length (log-log)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from thinkfast.plotting import (
    MARKERS,
    figure_paths,
    has_panel_below,
    in_paper_style,
    legend_below,
    panel_figure,
    panel_grid,
    panel_width,
    plain_log_ticks,
    save_figure,
    spaced_tick_labels,
    starts_row,
    wrap_to_width,
)
from thinkfast.profile.report import format_length
from thinkfast.profile.results import ProfileResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: How a cell that was not measured (OOM or skipped) is drawn: when there is one, a band at the bottom of
#: every panel is grey and hatched (the legend entry "OOM or skipped" shows the same), and each such cell is
#: its model's marker, hollow, in the model's colour, at its batch size in that band.
NOT_MEASURED_BAND = {"facecolor": "0.92", "edgecolor": "0.6", "hatch": "///", "linewidth": 0.0}
NOT_MEASURED_LABEL = "OOM or skipped"
#: Height of the suptitle line over the panels, in inches.
_TITLE_HEIGHT = 0.2


def plot_decode_throughput(result: ProfileResult, png: Path, width: float = 0.0) -> list[Path]:
    """Write :func:`decode_throughput_figure` to ``png`` and, as a vector PDF, beside it (``profile.pdf``);
    returns the files written, none when no cell was measured.

    With no measured cell there is nothing to plot: no file is written and older ones at those paths are
    removed, so that they are not mistaken for this sweep's.
    """
    fig = decode_throughput_figure(result, width)
    if fig is None:
        for path in figure_paths(png):
            path.unlink(missing_ok=True)
        return []
    return save_figure(fig, png)


@in_paper_style
def decode_throughput_figure(result: ProfileResult, width: float = 0.0) -> Figure | None:
    """Decode tokens/s against batch size, a panel per length; None when no cell was measured.

    ``width``: the figure's width in inches (0: one column of a paper for one length, the full page for
    several). Cells that are OOM or skipped have no point on the line but a hollow marker in the model's
    colour in a grey, hatched band kept free at the bottom of the panels (:data:`NOT_MEASURED_BAND`), one
    row per model, named in the legend. The legend sits under the panels, where it hides no point; a
    model with no measured cell at all is marked "(no cell measured)" there.
    """
    if not any(c.status == "ok" for c in result.cells):
        return None
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import FixedLocator
    from matplotlib.transforms import blended_transform_factory

    seqlens = sorted({c.seqlen for c in result.cells})
    batches = sorted({c.batch for c in result.cells})
    fig, axes = panel_figure(len(seqlens), width, extra_height=_TITLE_HEIGHT)
    unmeasured = any(c.status != "ok" for c in result.cells)
    band = min(0.06 * (len(result.models) + 0.5), 0.3)  # axes fraction at the bottom that holds unmeasured cells
    row = band / len(result.models)  # each model's row in it, the first model's at the bottom
    width_of_panel = panel_width(fig, len(seqlens))
    for index, (ax, seqlen) in enumerate(zip(axes, seqlens, strict=True)):
        prompt_len, gen_len = next((c.prompt_len, c.gen_len) for c in result.cells if c.seqlen == seqlen)
        in_band = blended_transform_factory(ax.transData, ax.transAxes)  # x: batch, y: fraction of the panel
        for i, model in enumerate(result.models):
            style = {"marker": MARKERS[i % len(MARKERS)], "color": f"C{i}"}
            points = sorted((c.batch, c.decode_tokens_per_s) for c in result.cells
                            if c.model == model.name and c.seqlen == seqlen and c.status == "ok")
            ax.plot([p[0] for p in points], [p[1] for p in points], **style)
            missing = [c.batch for c in result.cells
                       if c.model == model.name and c.seqlen == seqlen and c.status != "ok"]
            if missing:
                ax.plot(missing, [row * (i + 0.5)] * len(missing), linestyle="none", markerfacecolor="white",
                        markeredgewidth=1.0, transform=in_band, clip_on=False, zorder=3, gid="not-measured",
                        **style)
        if unmeasured:
            ax.add_patch(Rectangle((0, 0), 1, band, transform=ax.transAxes, zorder=0.5, gid="not-measured-band",
                                   **NOT_MEASURED_BAND))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if not has_panel_below(len(axes), index):
            ax.set_xlabel("batch size (sequences)")
        if starts_row(len(axes), index):
            ax.set_ylabel("decode throughput (tokens/s)")
        ax.set_title(wrap_to_width(f"length {format_length(seqlen)} ({prompt_len} prompt + {gen_len} generated)",
                                   0.9 * width_of_panel))
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
    low, high = axes[0].get_ylim()  # shared by every panel
    plain_log_ticks(axes[0].yaxis)
    if unmeasured:  # lower the axis so that no point sits in the band, which has no tick: it is no value
        ticks = [v for v in axes[0].yaxis.get_majorticklocs() if low <= v <= high]
        minor = [v for v in axes[0].yaxis.get_minorticklocs() if low <= v <= high]
        axes[0].set_ylim(low / (high / low) ** (band / (1 - band)), high)
        axes[0].yaxis.set_major_locator(FixedLocator(ticks))
        axes[0].yaxis.set_minor_locator(FixedLocator(minor))
    measured = {c.model for c in result.cells if c.status == "ok"}
    handles = [Line2D([], [], marker=MARKERS[i % len(MARKERS)], color=f"C{i}",
                      label=model.name if model.name in measured else f"{model.name} (no cell measured)")
               for i, model in enumerate(result.models)]
    if unmeasured:
        handles.append((Patch(label=NOT_MEASURED_LABEL, **NOT_MEASURED_BAND),
                        Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", color="0.3")))
    labels = [h.get_label() if not isinstance(h, tuple) else NOT_MEASURED_LABEL for h in handles]
    legend_below(fig, handles, labels, 2 * panel_grid(len(seqlens))[1] + 1)
    fig.suptitle(wrap_to_width(f"{result.device['name']}, {result.dtype}", 0.95 * fig.get_figwidth()))
    spaced_tick_labels(fig, axes[0].xaxis, batches)
    return fig

