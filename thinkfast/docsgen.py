"""Generate the reference pages from the code, so they cannot drift.

``python -m thinkfast.docsgen`` rewrites ``docs/recipe-reference.md`` (from the recipe
dataclasses and every registered plugin's ``Options``) and ``docs/cli.md`` (from the click
commands). ``tests/test_docs.py`` fails when the committed pages differ from what this writes.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

import click

from thinkfast.config.toml_writer import toml_value
from thinkfast.config.validate import _type_name

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return _value_text(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return _value_text(f.default_factory())
    return "required"


def _value_text(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return "(table)"
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return "(see below)"
    return f"`{toml_value(value)}`"  # as a recipe writes it: one line, escapes TOML reads back


def _constraints(meta: dict[str, Any]) -> str:
    parts = []
    if meta.get("unit"):
        parts.append(f"unit: {meta['unit']}")
    if meta.get("min") is not None:
        parts.append(f"min {meta['min']}")
    if meta.get("max") is not None:
        parts.append(f"max {meta['max']}")
    if meta.get("choices"):
        parts.append("one of " + ", ".join(f"`{c}`" for c in meta["choices"]))
    if meta.get("plugin"):
        parts.append(f"a `{meta['plugin']}` plugin name")
    return "; ".join(parts)


def _nested_dataclass(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp) or (None,)
        if dataclasses.is_dataclass(item):
            return item
    return None


def dataclass_table(cls: type, prefix: str, out: list[str], heading_level: int = 2, instance: Any = None) -> None:
    """Append a markdown section for ``cls`` (and, after it, for its nested sections).

    ``instance``: the section's default when it differs from the class's own defaults (``generate.data``).
    """
    hints = typing.get_type_hints(cls)
    doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    if doc.startswith(f"{cls.__name__}("):  # no docstring: the signature dataclasses write in its place
        doc = ""
    out.append(f"{'#' * heading_level} `{prefix}`\n")
    if doc:
        out.append(doc + "\n")
    out.append("| key | type | default | meaning |")
    out.append("| --- | --- | --- | --- |")
    nested: list[tuple[str, type, Any]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        meta = dict(f.metadata)
        tp = hints[f.name]
        sub = _nested_dataclass(tp)
        if sub is not None:
            key = f"{prefix}.{f.name}" if prefix else f.name
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            nested.append((f"[{key}]" if typing.get_origin(tp) is list else key, sub,
                           default if dataclasses.is_dataclass(default) else None))
        help_text = meta.get("help", "")
        extra = _constraints(meta)
        text = f"{help_text} ({extra})" if extra else help_text
        default_text = _value_text(getattr(instance, f.name)) if instance is not None else _default_text(f)
        out.append(f"| `{f.name}` | {_type_name(tp)} | {default_text} | {text.replace('|', '/')} |")
    out.append("")
    for key, sub, default in nested:
        dataclass_table(sub, key, out, heading_level, default)


def recipe_reference() -> str:
    """The markdown of ``docs/recipe-reference.md``."""
    from thinkfast.config.schema import Recipe
    from thinkfast.hookspecs import FAMILIES
    from thinkfast.registry import load_registry

    out = [
        "# Recipe reference",
        "",
        "Generated from the code by `python -m thinkfast.docsgen`; do not edit by hand.",
        "",
        "A recipe is a TOML file. Every section is optional; a subcommand reads the sections it needs.",
        "Unknown keys, wrong types, out-of-range values and unknown plugin names are rejected before any",
        "work starts. `include = [\"base.toml\"]` merges base recipes under this one (tables merge key by key).",
        "Paths in `include` are relative to the recipe file; every other path (`teacher.model`, `data.path`, "
        "`run.output_dir`, ...) is relative to the directory `thinkfast` runs in, as on the command line, so the "
        "recipes under `recipes/` are meant to be run from the project root.",
        "On the command line, `--set key.path=value` overrides any key (the value is TOML; a bare word is a string); "
        "an entry of a list of tables is selected by its index: `--set distill.stages[1].lr=3e-4` (or "
        "`distill.stages.1.lr=3e-4`). A problem with a value given by `--set` (a wrong type, a value out of "
        "range, a missing file) names that override, as `--set 'key.path=value': ...`, and one with a value given "
        "by a subcommand's flag names the flag, as `--device: ...`, instead of the recipe file and key.",
        "A list of tables such as `distill.stages` is written as `[[distill.stages]]` blocks; its items are",
        "documented under `[distill.stages]` below.",
        "",
    ]
    section_out: list[str] = []
    hints = typing.get_type_hints(Recipe)
    top = [f for f in dataclasses.fields(Recipe) if f.init and _nested_dataclass(hints[f.name]) is None]
    out.append("## Top level\n")
    out.append("| key | type | default | meaning |")
    out.append("| --- | --- | --- | --- |")
    for f in top:
        out.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {_default_text(f)} | {f.metadata.get('help', '')} |")
    out.append("")
    for f in dataclasses.fields(Recipe):
        sub = _nested_dataclass(hints[f.name])
        if sub is not None:
            dataclass_table(sub, f.name, section_out)
    out.extend(section_out)

    registry = load_registry()
    out.append("## Plugin options\n")
    out.append("Tables named `options` take the options of the plugin chosen beside them. These are the options")
    out.append("of the plugins that ship with thinkfast; `thinkfast plugins` lists what is installed.\n")
    for family in FAMILIES:
        for entry in registry.all_entries():
            if entry.family != family or entry.package != "thinkfast":
                continue
            options = getattr(entry.component, "Options", None)
            if options is None or not dataclasses.is_dataclass(options):
                continue
            dataclass_table(options, f"{family}: {entry.name}", out, heading_level=3)
    return "\n".join(out).rstrip() + "\n"


def _command_doc(cmd: click.Command, name: str, out: list[str]) -> None:
    ctx = click.Context(cmd, info_name=name, terminal_width=100, max_content_width=100,
                        help_option_names=["-h", "--help"])
    out.append(f"## `{name}`\n")
    out.append("```text")
    out.append(cmd.get_help(ctx))
    out.append("```\n")
    if isinstance(cmd, click.Group):
        for sub_name in sorted(cmd.commands):
            _command_doc(cmd.commands[sub_name], f"{name} {sub_name}", out)


def cli_errors() -> str:
    """The "Errors" section of ``docs/cli.md``: what every subcommand prints when something goes wrong."""
    from thinkfast.cli.crash import CRASH_GRACE_S

    return f"""## Errors

- **A mistake on the command line** (a bad flag value, an unknown option or subcommand, a missing argument) is
  one line naming the flag and what to write instead, and exit code 2:
  `error: --temperature: 'x' is not a number; use a number of at least 0 (see thinkfast generate --help)`,
  `error: --tempertaure: no such option; did you mean --temperature? (see thinkfast generate --help)`.
  A value the recipe checks (a plugin name, a device) names the flag too, not the recipe key it sets:
  `error: --aggregator: no aggregators plugin named 'majorty' (did you mean 'majority'?); installed: ...`;
  a value given by `--set` names that item, `error: --set 'run.device=gpu': ...`. An empty value (`--data-path ''`,
  `-o ''`, an empty RECIPE: often an unset shell variable) is refused, never read as "not given" or as the current
  directory, and so is a zero that a recipe key reads as "derive it" (`profile --gen-len 0`, `--memory-cap 0`,
  `--bandwidth 0`): leave the flag out for that.
- **Anything else you can fix** (a recipe key, a file, a model path, a plugin name) is one `error:` line, or a
  counted list of them, naming the file or key and the fix; exit code 2. Nothing already written is lost.
- **A crash** (an exception thinkfast did not expect: a bug, please report it) prints its Python traceback
  and exits 1. `THINKFAST_TRACEBACK=1` adds the traceback above the one-line messages too.
- **Under torchrun** rank 0 reports an error for the job; another rank prints `rank R: error: ...` only for an
  error rank 0 did not hit. A crash prints its traceback once, headed `rank R crashed:`, from the lowest rank
  that crashed that way; each other rank that crashed the same way (same exception type and frames) prints
  one line, `rank R: crashed the same way as rank L (ValueError: ...); see rank L's traceback`, and a rank
  that crashed another way, or alone, prints its own traceback (after waiting up to {CRASH_GRACE_S:g} s for
  lower ranks). A rank that only stopped because another rank went away while it waited for it (gloo's
  "Connection closed by peer", NCCL's aborted communicator) prints one line, `rank R: stopped because another
  rank of the job went away during a collective operation (...); that rank's message says why`, not a
  traceback of its own (`THINKFAST_TRACEBACK=1` prints it). torchrun's own summary below may still name that
  rank as the "root cause": it is the first to exit, not the one that failed.
"""


def cli_progress() -> str:
    """The "Progress" section of ``docs/cli.md``: what the long subcommands show while they run."""
    from thinkfast.progress import DEFAULT_SECONDS, SECONDS_ENV

    return f"""## Progress

`distill`, `generate` and `profile` report progress on stderr, so that stdout keeps only results.

- **In a terminal** `distill` and `generate` draw a bar that redraws in place (`distill`: stage, step,
  loss, tokens/s, learning rate, elapsed time and ETA; `generate`: samples done, tokens/s, elapsed time).
  When the run ends, or stops on an error or Ctrl-C, the bar's last frame stays and the next line is the
  run's own: after Ctrl-C the last line is `interrupted; anything already written is kept`.
- **In a log** (stderr not an interactive terminal: `2>run.log`, `nohup`, Slurm, CI, `TERM=dumb`) no bar
  is drawn. Every `{SECONDS_ENV}` seconds (default {DEFAULT_SECONDS:g}; `0`: never) one plain line
  shows the bar's fields and the percentage done, without carriage returns or colour codes, e.g.
  `0:hidden 15% step 300/2000 loss 0.0174 742 tok/s lr 9.99e-04 0:05:00 ETA 0:28:20`. A run shorter than
  that writes no progress line, only its result. The tqdm bars of the libraries thinkfast calls
  (transformers' "Loading weights", a GGUF file's de-quantization) are turned off there too, by setting
  `HF_HUB_DISABLE_PROGRESS_BARS=1` and `TQDM_DISABLE=1` unless you set them yourself.
- `profile` writes one line per model and one per measured cell, in a terminal and in a log alike. While
  a cell runs, a terminal shows a spinner with the cell and its elapsed time (erased when the cell's line
  is written); a log gets `  batch   512  length   8192  measuring (cell 3 of 4), 0:01:00 so far` every
  `THINKFAST_PROGRESS_SECONDS` seconds, so a slow cell (compilation, a large batch on the CPU) shows it
  is alive.
- `evaluate` shows a bar while it grades in a terminal (erased when grading ends), and nothing in a log.
- `distill --no-progress` (or `distill.progress = false`) turns both the bar and the lines off; under
  torchrun only rank 0 reports progress.
- Rates and times below the precision a column shows keep two significant digits (`0.42 tok/s`,
  `0.0049 s`) instead of reading as 0.
"""


def cli_reference() -> str:
    """The markdown of ``docs/cli.md``."""
    from thinkfast.cli import cli

    out = ["# CLI reference", "", "Generated from the code by `python -m thinkfast.docsgen`; do not edit by hand.", "",
           cli_errors(), cli_progress()]
    _command_doc(cli, "thinkfast", out)
    return "\n".join(out).rstrip() + "\n"


PAGES = {"recipe-reference.md": recipe_reference, "cli.md": cli_reference}


def main(argv: list[str] | None = None) -> int:
    """Write the generated pages (``--check``: only report whether they are current)."""
    argv = sys.argv[1:] if argv is None else argv
    stale = []
    for name, build in PAGES.items():
        text = build()
        path = DOCS / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale generated docs: {', '.join(stale)}; run `python -m thinkfast.docsgen`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
