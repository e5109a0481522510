"""Rich tables of a :class:`~thinkfast.profile.results.ProfileResult`.

:func:`comparison_table` puts the models side by side (decode tokens/s, and each model's
speedup over the baseline in the same cell); :func:`detail_table` lists every metric of every cell.
"""

from __future__ import annotations

from rich.table import Table

from thinkfast.profile.results import CellResult, ProfileResult


def format_length(tokens: int) -> str:
    """8192 -> '8k', 1536 -> '1536'."""
    return f"{tokens // 1024}k" if tokens >= 1024 and tokens % 1024 == 0 else str(tokens)


def _status_text(cell: CellResult | None) -> str:
    if cell is None:
        return "-"
    if cell.status == "oom":
        return "[red]OOM[/red]"
    if cell.status == "skipped":
        return "[yellow]skipped[/yellow]"
    return ""


def _grid(result: ProfileResult) -> list[tuple[int, int]]:
    return sorted({(c.seqlen, c.batch) for c in result.cells})


def comparison_table(result: ProfileResult) -> Table:
    """Rows: (length, batch). Columns: decode tokens/s per model, with the speedup over the baseline."""
    title = (f"decode tokens/s on {result.device['name']} ({result.dtype}); "
             f"(x N) = speedup over {result.baseline}")
    table = Table(title=title, min_width=len(title) + 4)
    table.add_column("length", justify="right")
    table.add_column("prompt+gen", justify="right")
    table.add_column("batch", justify="right")
    names = [m.name for m in result.models]
    for name in names:
        table.add_column(name, justify="right")
    for seqlen, batch in _grid(result):
        first = next(c for c in result.cells if (c.seqlen, c.batch) == (seqlen, batch))
        row = [format_length(seqlen), f"{first.prompt_len}+{first.gen_len}", str(batch)]
        for name in names:
            cell = result.cell(name, batch, seqlen)
            if cell is None or cell.status != "ok":
                row.append(_status_text(cell))
                continue
            text = f"{cell.decode_tokens_per_s:,.0f}"
            speedup = result.speedup(name, batch, seqlen)
            if name != result.baseline and speedup is not None:
                text += f" ({speedup:.2f}x)"
            row.append(text)
        table.add_row(*row)
    return table


def detail_table(result: ProfileResult) -> Table:
    """One row per model x cell: prefill, decode, memory, bandwidth-bound fraction, status."""
    bandwidth = result.device["bandwidth_bytes_per_s"] / 1e9
    table = Table(title=f"details (bandwidth {bandwidth:,.0f} GB/s, {result.device['bandwidth_source']})")
    for column in ("model", "length", "batch", "prefill tok/s", "ms/step", "decode tok/s", "peak GiB",
                   "% BW bound", "status"):
        table.add_column(column, justify="left" if column in ("model", "status") else "right")
    for cell in sorted(result.cells, key=lambda c: (c.model != result.baseline, c.model, c.seqlen, c.batch)):
        if cell.status != "ok":
            table.add_row(cell.model, format_length(cell.seqlen), str(cell.batch), "", "", "", "", "",
                          f"{_status_text(cell)}: {cell.reason}")
            continue
        table.add_row(
            cell.model, format_length(cell.seqlen), str(cell.batch),
            f"{cell.prefill_tokens_per_s:,.0f}", f"{cell.decode_step_ms:.2f}", f"{cell.decode_tokens_per_s:,.0f}",
            f"{cell.peak_memory_bytes / 2**30:.3f}", f"{100 * cell.bandwidth_fraction:.1f}",
            "ok" + (" (graph)" if cell.cuda_graph else ""),
        )
    return table


def plan_table(cells: list[CellResult]) -> Table:
    """A dry run: estimated memory of every model x cell and whether it would run."""
    table = Table(title="dry run: estimated peak memory per cell")
    for column in ("model", "length", "prompt+gen", "batch", "estimated GiB", "plan"):
        table.add_column(column, justify="left" if column in ("model", "plan") else "right")
    for cell in cells:
        plan = "run" if cell.status == "planned" else f"[yellow]skip[/yellow]: {cell.reason}"
        table.add_row(cell.model, format_length(cell.seqlen), f"{cell.prompt_len}+{cell.gen_len}", str(cell.batch),
                      f"{cell.estimated_bytes / 2**30:.2f}", plan)
    return table
