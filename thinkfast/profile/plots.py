"""``profile.png``: decode tokens/s against batch size, one line per model, one panel per length (log-log)."""

from __future__ import annotations

from pathlib import Path

from thinkfast.profile.report import format_length
from thinkfast.profile.results import ProfileResult

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_decode_throughput(result: ProfileResult, path: Path) -> Path | None:
    """Write the figure to ``path`` (PNG, 150 dpi) and return it; None when no cell was measured.

    With no measured cell there is nothing to plot: no file is written and an older one at
    ``path`` is removed, so that it is not mistaken for this sweep's.

    Cells that are OOM or skipped have no point but an ``x`` in the model's colour at the bottom;
    a model with no measured cell in a panel gets a
    legend entry marked "(no cell fits)" so its absence is visible.
    """
    if not any(c.status == "ok" for c in result.cells):
        path.unlink(missing_ok=True)
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    seqlens = sorted({c.seqlen for c in result.cells})
    batches = sorted({c.batch for c in result.cells})
    fig, axes = plt.subplots(1, len(seqlens), figsize=(4.2 * len(seqlens) + 0.8, 3.8), squeeze=False,
                             sharey=True)
    for ax, seqlen in zip(axes[0], seqlens, strict=True):
        prompt_len, gen_len = next((c.prompt_len, c.gen_len) for c in result.cells if c.seqlen == seqlen)
        for i, model in enumerate(result.models):
            points = [(c.batch, c.decode_tokens_per_s) for c in result.cells
                      if c.model == model.name and c.seqlen == seqlen and c.status == "ok"]
            points.sort()
            label = model.name if points else f"{model.name} (no cell fits)"
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, marker=_MARKERS[i % len(_MARKERS)], linewidth=1.6, markersize=5, label=label,
                    color=f"C{i}")
            missing = [c.batch for c in result.cells
                       if c.model == model.name and c.seqlen == seqlen and c.status != "ok"]
            for batch in missing:
                ax.annotate("x", (batch, 0.01 + 0.05 * i), xycoords=("data", "axes fraction"), color=f"C{i}",
                            ha="center", va="bottom", fontsize=9, fontweight="bold")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.set_xlabel("batch size (sequences)")
        ax.set_title(f"length {format_length(seqlen)} (prompt {prompt_len} + gen {gen_len})", fontsize=10)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
        ax.legend(fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("decode throughput (tokens/s)")
    fig.suptitle(f"decode throughput on {result.device['name']} ({result.dtype}); "
                 f"x at the bottom: OOM or skipped (model's colour)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
