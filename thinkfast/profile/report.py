"""Rich tables of a :class:`~thinkfast.profile.results.ProfileResult`.

:func:`comparison_table` puts the models side by side (decode tokens/s, and each model's
speedup over the baseline in the same cell); :func:`detail_tables` lists every metric of every
measured cell, a table per model, and why the other cells were not measured. Each fits an
80-column terminal (see :mod:`thinkfast.tables`).
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from thinkfast.profile.grid import format_bytes
from thinkfast.profile.results import CellResult, ProfileResult
from thinkfast.tables import format_number, number_column, text_column


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
    number_column(table, "length")
    number_column(table, "prompt+gen")
    number_column(table, "batch")
    names = [m.name for m in result.models]
    for name in names:  # "123,456 (1.23x)" may wrap at its space in a narrow terminal
        text_column(table, name, justify="right")
    for seqlen, batch in _grid(result):
        first = next(c for c in result.cells if (c.seqlen, c.batch) == (seqlen, batch))
        row = [format_length(seqlen), f"{first.prompt_len}+{first.gen_len}", str(batch)]
        for name in names:
            cell = result.cell(name, batch, seqlen)
            if cell is None or cell.status != "ok":
                row.append(_status_text(cell))
                continue
            text = format_number(cell.decode_tokens_per_s)
            speedup = result.speedup(name, batch, seqlen)
            if name != result.baseline and speedup is not None:
                text += f" ({format_number(speedup, 2)}x)"  # 0.004x rather than 0.00x
            row.append(text)
        table.add_row(*row)
    return table


def _model_order(result: ProfileResult) -> list[str]:
    """The baseline first, then the other models in the order they were given."""
    names = [m.name for m in result.models]
    return sorted(names, key=lambda name: name != result.baseline)


def detail_tables(result: ProfileResult) -> list[Table]:
    """Per model with a measured cell, one row per cell: prefill, decode, peak memory, bandwidth-bound
    fraction (and whether the step ran as a CUDA graph, when any did); then one table of the cells
    that were skipped or ran out of memory, with the reason."""
    bandwidth = result.device["bandwidth_bytes_per_s"] / 1e9
    graphs = any(c.cuda_graph for c in result.cells)
    tables = []
    for name in _model_order(result):
        cells = sorted((c for c in result.cells if c.model == name and c.status == "ok"),
                       key=lambda c: (c.seqlen, c.batch))
        if not cells:
            continue
        table = Table(title=f"{name} (bandwidth {format_number(bandwidth)} GB/s, {result.device['bandwidth_source']})")
        for column in ("length", "batch", "prefill\ntok/s", "ms/step", "decode\ntok/s", "peak\nmemory",
                       "% BW\nbound", *(("CUDA\ngraph",) if graphs else ())):
            number_column(table, column)
        for cell in cells:
            table.add_row(
                format_length(cell.seqlen), str(cell.batch), format_number(cell.prefill_tokens_per_s),
                format_number(cell.decode_step_ms, 2), format_number(cell.decode_tokens_per_s),
                format_bytes(cell.peak_memory_bytes), format_number(100 * cell.bandwidth_fraction, 1),
                *(("yes" if cell.cuda_graph else "no",) if graphs else ()),
            )
        tables.append(table)
    failed = [c for name in _model_order(result) for c in sorted(
        (c for c in result.cells if c.model == name and c.status != "ok"), key=lambda c: (c.seqlen, c.batch))]
    if failed:
        table = Table(title="cells not measured")
        text_column(table, "model")
        number_column(table, "length")
        number_column(table, "batch")
        text_column(table, "status")
        text_column(table, "reason")
        for cell in failed:
            table.add_row(cell.model, format_length(cell.seqlen), str(cell.batch), _status_text(cell),
                          Text(cell.reason or ""))  # an error message is not markup
        tables.append(table)
    return tables


def plan_table(cells: list[CellResult]) -> Table:
    """A dry run: estimated memory of every model x cell and whether it would run."""
    table = Table(title="dry run: estimated peak memory per cell")
    text_column(table, "model")
    for column in ("length", "prompt+gen", "batch", "estimated"):
        number_column(table, column)
    text_column(table, "plan")
    for cell in cells:
        plan = "run" if cell.status == "planned" else f"[yellow]skip[/yellow]: {cell.reason}"
        table.add_row(cell.model, format_length(cell.seqlen), f"{cell.prompt_len}+{cell.gen_len}", str(cell.batch),
                      format_bytes(cell.estimated_bytes), plan)
    return table
