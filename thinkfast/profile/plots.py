"""``profile.png``: decode tokens/s against batch size, one line per model, one panel per length (log-log)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from thinkfast.plotting import MARKERS, legend_below, plain_log_ticks
from thinkfast.profile.report import format_length
from thinkfast.profile.results import ProfileResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_decode_throughput(result: ProfileResult, path: Path) -> Path | None:
    """Write :func:`decode_throughput_figure` to ``path`` (PNG, 150 dpi) and return it; None when no
    cell was measured.

    With no measured cell there is nothing to plot: no file is written and an older one at
    ``path`` is removed, so that it is not mistaken for this sweep's.
    """
    fig = decode_throughput_figure(result)
    if fig is None:
        path.unlink(missing_ok=True)
        return None
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def decode_throughput_figure(result: ProfileResult) -> Figure | None:
    """Decode tokens/s against batch size, a panel per length; None when no cell was measured.

    Cells that are OOM or skipped have no point but an ``x`` in the model's colour in a band kept
    free at the bottom of the panel. The legend sits under the panels, where it hides no point; a
    model with no measured cell at all is marked "(no cell measured)" there.
    """
    if not any(c.status == "ok" for c in result.cells):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, NullFormatter

    seqlens = sorted({c.seqlen for c in result.cells})
    batches = sorted({c.batch for c in result.cells})
    fig, axes = plt.subplots(1, len(seqlens), figsize=(4.2 * len(seqlens) + 0.8, 4.2), squeeze=False,
                             sharey=True, layout="constrained")
    band = min(0.03 + 0.05 * len(result.models), 0.3)  # axes fraction at the bottom that holds the x markers
    row = (band - 0.03) / max(len(result.models), 1)  # each model's row of markers in it
    for ax, seqlen in zip(axes[0], seqlens, strict=True):
        prompt_len, gen_len = next((c.prompt_len, c.gen_len) for c in result.cells if c.seqlen == seqlen)
        for i, model in enumerate(result.models):
            points = sorted((c.batch, c.decode_tokens_per_s) for c in result.cells
                            if c.model == model.name and c.seqlen == seqlen and c.status == "ok")
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=MARKERS[i % len(MARKERS)],
                    linewidth=1.6, markersize=5, color=f"C{i}")
            missing = [c.batch for c in result.cells
                       if c.model == model.name and c.seqlen == seqlen and c.status != "ok"]
            for batch in missing:
                ax.annotate("x", (batch, 0.01 + row * i), xycoords=("data", "axes fraction"), color=f"C{i}",
                            ha="center", va="bottom", fontsize=9, fontweight="bold")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch size (sequences)")
        ax.set_title(f"length {format_length(seqlen)} (prompt {prompt_len} + gen {gen_len})", fontsize=10)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
    unmeasured = any(c.status != "ok" for c in result.cells)
    low, high = axes[0][0].get_ylim()  # shared by every panel
    if unmeasured:  # lower the axis so that no point sits in the x band
        low = low / (high / low) ** (band / (1 - band))
        axes[0][0].set_ylim(low, high)
    plain_log_ticks(axes[0][0].yaxis)
    axes[0][0].set_ylabel("decode throughput (tokens/s)")
    measured = {c.model for c in result.cells if c.status == "ok"}
    handles = [Line2D([], [], marker=MARKERS[i % len(MARKERS)], linewidth=1.6, markersize=5, color=f"C{i}",
                      label=model.name if model.name in measured else f"{model.name} (no cell measured)")
               for i, model in enumerate(result.models)]
    if unmeasured:
        handles.append(Line2D([], [], linestyle="none", marker="$x$", color="0.3", label="OOM or skipped"))
    legend_below(fig, handles, [h.get_label() for h in handles], 2 * len(seqlens) + 1, fontsize=8)
    fig.suptitle(textwrap.fill(f"decode throughput on {result.device['name']} ({result.dtype})",
                               width=int(11 * fig.get_figwidth())), fontsize=10)
    return fig
