"""``thinkfast profile [RECIPE]``: throughput and memory over a batch x length grid."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from thinkfast.cli.options import RECIPE_PATH, flag_name, output_directory, resolve_output_dir, run_options
from thinkfast.cli.param_types import FloatRange, IntRange, Text
from thinkfast.config.loader import load_recipe
from thinkfast.plotting import FIGURE_WIDTH_HELP
from thinkfast.progress import CurrentWork
from thinkfast.tables import format_number

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
progress_console = Console(stderr=True, highlight=False, soft_wrap=True)  # a log line is one line


def _option_value(parse: Callable[[str, str], Any]) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A click callback that parses an option's text with ``parse(text, flag)`` (a :mod:`thinkfast.profile.grid`
    parser, whose :class:`ValueError` names ``flag`` first); the error is the CLI's one line for that flag."""
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        flag = param.opts[0]
        try:
            return parse(value, flag)
        except ValueError as exc:
            raise click.BadParameter(str(exc).removeprefix(f"{flag} "), ctx, param) from None
    return callback


def _sizes(minimum: int = 1):
    def parse(text: str, flag: str) -> list[int]:
        from thinkfast.profile.grid import parse_sizes

        return parse_sizes(text, flag, minimum)
    return _option_value(parse)


def _length(text: str, flag: str) -> int:
    """``--prompt-len`` / ``--gen-len``: a size of at least 1 token. (The recipe's 0, "derive it from the other
    lengths", is what leaving the flag out means.)"""
    from thinkfast.profile.grid import parse_size

    value = parse_size(text, flag)
    if value < 1:
        raise ValueError(f"{flag} {text!r} is below the minimum 1 token; leave the flag out to derive it from the "
                         f"other lengths")
    return value


def _memory(text: str, flag: str) -> str:
    """``--memory-cap``: an amount of memory above 0 bytes (leaving the flag out means the device's memory)."""
    from thinkfast.profile.grid import parse_memory

    if parse_memory(text) <= 0:
        raise ValueError(f"{flag} {text!r} leaves no memory; give a limit such as 40G, or leave the flag out for "
                         f"the device's memory")
    return text


def _flags_to_section(**flags: Any) -> dict[str, Any]:
    """The ``[profile]`` keys the user set on the command line (None means not given)."""
    section = {key: value for key, value in flags.items() if value is not None}
    if "models" in section:
        section["models"] = [m.strip() for m in section["models"].split(",") if m.strip()]
    if "seqlen" not in section and section.get("prompt_len") and section.get("gen_len"):
        section["seqlen"] = [section["prompt_len"] + section["gen_len"]]
    return section


@click.command("profile")
@click.argument("recipe", type=RECIPE_PATH, required=False)
@click.option("--models", type=Text("one or more models, e.g. llama-3.2-1b,llamba-1b"), metavar="A,B,...",
              help="Built-in shapes (llama-3.2-1b, llamba-1b, hybrid-1b, -3b and tiny- variants), model directories "
                   "or recipe files. Default: llama-3.2-1b,llamba-1b,hybrid-1b.")
@click.option("--batch", callback=_sizes(), metavar="SIZES",
              help="Batch sizes: one (512) or a list (1,8,64,512). Default: 1,64,512.")
@click.option("--seqlen", callback=_sizes(minimum=2), metavar="LENGTHS",
              help="Total tokens per sequence, k = 1024: 8k, or a list 1k,8k,32k. Default: 1k,8k.")
@click.option("--prompt-len", callback=_option_value(_length), metavar="TOKENS",
              help="Prompt tokens of each length (the rest is generated). Default: a quarter of it.")
@click.option("--gen-len", callback=_option_value(_length), metavar="TOKENS",
              help="Generated tokens of each length (the rest is prompt).")
@click.option("--warmup", type=IntRange(min=0), default=None, help="Untimed calls before each measurement.")
@click.option("--repeats", type=IntRange(min=1), default=None, help="Timed repeats (median reported).")
@click.option("--decode-points", type=IntRange(min=1, max=64), default=None,
              help="Positions over the generated range at which a decode step is timed.")
@click.option("--memory-cap", callback=_option_value(_memory), metavar="BYTES",
              help="Memory limit, e.g. 40G (GiB) or 40GB; cells estimated above it are skipped.")
@click.option("--skip-estimated/--no-skip-estimated", default=None,
              help="Skip cells estimated above the memory limit (default) or try them, recording OOMs.")
@click.option("--bandwidth", type=FloatRange(min=0.0, min_open=True), default=None, metavar="GB/S",
              help="Device bandwidth for the bandwidth-bound fraction; default: measured.")
@click.option("--baseline", type=Text("one of --models, or leave the flag out for the first all-attention model"),
              default=None, help="Model the speedups are relative to (one of --models).")
@click.option("--cuda-graphs/--no-cuda-graphs", default=None, help="Capture the decode step in a CUDA graph.")
@click.option("--compile/--no-compile", default=None,
              help="torch.compile the decode step first, and large prefills' pointwise work, as generate "
                   "does (GPU only). Default: off.")
@click.option("--plots/--no-plots", default=None, help="Write profile.png and profile.pdf.")
@click.option("--figure-width", type=FloatRange(min=0.0), default=None, metavar="INCHES",
              help=FIGURE_WIDTH_HELP)
@click.option("--dry-run", is_flag=True, help="Only print each cell's estimated memory and whether it would run.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", default=None, help="auto, float32, bfloat16 or float16.")
@run_options
def command(recipe: Path | None, overrides: tuple[str, ...], output_dir: Path | None, device: str | None,
            dtype: str | None, dry_run: bool, **flags: Any) -> None:
    """Measure prefill/decode throughput and memory over a batch x length grid.

    \b
    Example: thinkfast profile --batch 1,64,512 --seqlen 1k,8k --models llama-3.2-1b,llamba-1b,hybrid-1b
    Writes profile.json, profile.png and profile.pdf (the same figure) to the output directory and prints
    the tables.
    """
    from thinkfast.profile.plots import plot_decode_throughput
    from thinkfast.profile.report import comparison_table, detail_tables, plan_table
    from thinkfast.profile.runner import plan_profile, run_profile

    extra: dict[str, Any] = {"profile": _flags_to_section(**flags)}
    run = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
    extra["run"] = run
    given = {f"profile.{key}": flag_name(key) for key, value in flags.items() if value is not None}
    given.update({f"run.{key}": flag_name(key) for key in run})
    loaded = load_recipe(recipe, overrides, extra=extra, flags=given)
    out_dir = resolve_output_dir(loaded, output_dir, "profile")
    section = loaded.profile
    if dry_run:
        console.print(plan_table(plan_profile(section, loaded.run.device, loaded.run.dtype)))
        return

    def on_model(info) -> None:
        progress_console.print(f"[bold]{info.name}[/bold]: {info.num_params / 1e6:,.1f}M parameters, "
                               f"mixers {info.mixers}, kernels {info.kernels}")

    def where(cell) -> str:
        return f"  batch {cell.batch:>5}  length {cell.seqlen:>6}"

    work = CurrentWork(progress_console)

    def on_cell_start(cell, number: int, count: int) -> None:
        work.begin(f"{where(cell)}  measuring (cell {number} of {count})")

    def on_cell(cell) -> None:
        work.end()
        if cell.status == "ok":
            progress_console.print(f"{where(cell)}  decode {format_number(cell.decode_tokens_per_s):>12} tok/s  "
                                   f"{format_number(cell.decode_step_ms, 2):>8} ms/step")
        else:
            progress_console.print(f"{where(cell)}  {cell.status}: {cell.reason}")

    with output_directory(out_dir), work:  # before the sweep: its results must have somewhere to go
        result = run_profile(section, loaded.run.device, loaded.run.dtype, loaded.kernels,
                             on_cell=on_cell, on_model=on_model, on_cell_start=on_cell_start)
        json_path = result.write(out_dir / "profile.json")
    console.print(comparison_table(result))
    for table in detail_tables(result):
        console.print(table)
    console.print(f"wrote {json_path}")
    if section.plots:
        written = plot_decode_throughput(result, out_dir / "profile.png", section.figure_width)
        if not written:
            console.print("[yellow]warning:[/yellow] no cell was measured (all skipped or OOM): no profile.png "
                          "or profile.pdf")
        for path in written:
            console.print(f"wrote {path}")
