"""``thinkfast generate [RECIPE]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from thinkfast.cli.options import RECIPE_PATH, flag_name, output_directory, resolve_output_dir, run_options
from thinkfast.cli.param_types import Choice, FloatRange, IntRange, Text
from thinkfast.config.loader import load_recipe
from thinkfast.config.validate import check_input_files
from thinkfast.tables import format_number

# flag name -> recipe key path (flags given on the command line override the recipe; --set overrides both)
FLAG_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("generate", "model"),
    "dataset": ("generate", "data", "dataset"),
    "data_path": ("generate", "data", "path"),
    "split": ("generate", "data", "split"),
    "limit": ("generate", "data", "limit"),
    "template": ("generate", "data", "template"),
    "few_shot": ("generate", "data", "few_shot"),
    "n": ("generate", "n_samples"),
    "temperature": ("generate", "temperature"),
    "top_p": ("generate", "top_p"),
    "top_k": ("generate", "top_k"),
    "min_p": ("generate", "min_p"),
    "max_new_tokens": ("generate", "max_new_tokens"),
    "stop": ("generate", "stop"),
    "stop_on_special_tokens": ("generate", "stop_on_special_tokens"),
    "stop_at_answer": ("generate", "stop_at_answer"),
    "batch_size": ("generate", "batch_size"),
    "state_dtype": ("generate", "state_dtype"),
    "compile": ("generate", "compile"),
    "seed": ("run", "seed"),
    "device": ("run", "device"),
    "dtype": ("run", "dtype"),
}


def _given(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags that were given (``None`` and no ``--stop`` mean not given)."""
    return {name: flags[name] for name in FLAG_KEYS if flags.get(name) is not None
            and not (name == "stop" and not flags[name])}


def flags_to_recipe(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags that were given, as a nested recipe dict."""
    out: dict[str, Any] = {}
    for name, value in _given(flags).items():
        path = FLAG_KEYS[name]
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = list(value) if name == "stop" else value
    return out


def flag_keys(flags: dict[str, Any]) -> dict[str, str]:
    """``{recipe key path: flag}`` for the flags that were given (a problem found there names the flag)."""
    return {".".join(FLAG_KEYS[name]): flag_name(name) for name in _given(flags)}


def derived_defaults(flags: dict[str, Any]) -> dict[str, Any] | None:
    """Recipe values the flags imply unless the recipe sets them: ``--data-path`` naming a file, without
    ``--split``, reads that file as the split its name stands for (:func:`~thinkfast.data.files.split_of_file`),
    so problem ids say ``train`` for ``gsm8k_train.jsonl``, not the default split ``test``. A split set by
    the recipe, ``--split`` or ``--set`` wins; ids of runs made that way, or from a directory or the
    dataset's own source, are unchanged."""
    from thinkfast.data.files import split_of_file

    if not flags.get("data_path") or flags.get("split") is not None:
        return None
    split = split_of_file(flags["data_path"])
    return {"generate": {"data": {"split": split}}} if split else None


@click.command("generate")
@click.argument("recipe", type=RECIPE_PATH, required=False)
@click.option("--model", type=Text("a model directory, hub id or .gguf file, or leave the flag out for "
                                   "generate.model or [teacher].model"),
              help="Model directory written by `distill`, or a teacher (hub id, HF directory, .gguf). "
                   "Default: generate.model, else [teacher].model.")
@click.option("--dataset", type=Text("a datasets plugin name (see thinkfast plugins), or leave the flag out for "
                                     "generate.dataset"),
              help="Dataset plugin name (see `thinkfast plugins`). Default: gsm8k.")
@click.option("--data-path", type=Text("a .jsonl, .json or .parquet file or a directory of them, or leave the "
                                       "flag out for the dataset's own source"),
              help="Local file or directory to read problems from instead of the plugin's source.")
@click.option("--split", type=Text("a split name such as test or train"),
              help="Dataset split. Default: test; with --data-path naming a file (and no split in the recipe), the "
                   "split in the file's name (train, test, validation, dev, val), else its stem.")
@click.option("--limit", type=IntRange(min=0), help="Use the first N problems (0: all).")
@click.option("--template", type=Choice(["auto", "chat", "plain"]),
              help="Prompt rendering: chat template, plain text, or auto (chat when the tokenizer has one).")
@click.option("--few-shot", type=IntRange(min=0), help="Worked examples put before each question.")
@click.option("--n", "--n-samples", "n", type=IntRange(min=1),
              help="Samples per problem (under torchrun: --n-samples; torchrun reads --n as its own). Default: 8.")
@click.option("--temperature", type=FloatRange(min=0.0), help="Sampling temperature; 0 = greedy. Default: 0.8.")
@click.option("--top-p", type=FloatRange(0.0, 1.0), help="Nucleus mass (1 disables). Default: 1.")
@click.option("--top-k", type=IntRange(min=0), help="Keep the k most likely tokens (0 disables). Default: 0.")
@click.option("--min-p", type=FloatRange(0.0, 1.0),
              help="Drop tokens below min_p x the top probability (0 disables). Default: 0.")
@click.option("--max-new-tokens", type=IntRange(min=1), help="Generated tokens per sample at most. Default: 512.")
@click.option("--stop", multiple=True, type=Text("the text that ends a sample"),
              help="Stop string (repeatable); the text is cut before it.")
@click.option("--stop-on-special-tokens/--no-stop-on-special-tokens", default=None,
              help="End a sample at any tokenizer special token (e.g. <|im_start|>), not only at the model's EOS. "
                   "Default: on.")
@click.option("--stop-at-answer/--no-stop-at-answer", default=None,
              help="End a sample once its answer is complete (gsm8k format: the newline of its first '#### <number>' "
                   "line; finish reason 'answer'). Default: on.")
@click.option("--seed", type=IntRange(min=0), help="Sampling seed (run.seed). Default: 0.")
@click.option("--batch-size", type=IntRange(min=1), help="Sequences decoded together (slots). Default: 64.")
@click.option("--state-dtype", type=Choice(["float32", "bfloat16", "float16"]),
              help="dtype of the SSM state. Default: float32.")
@click.option("--compile/--no-compile", default=None,
              help="torch.compile the decode step before capturing it, and large prefills' pointwise work "
                   "(GPU only). Default: on.")
@click.option("--device", help="'auto', 'cpu', 'cuda' or 'cuda:N' (run.device). Default: auto.")
@click.option("--dtype", type=Choice(["auto", "float32", "bfloat16", "float16"]),
              help="Weights and KV cache dtype; auto = bfloat16 on GPU, float32 on CPU.")
@run_options
def command(recipe: Path | None, overrides: tuple[str, ...], output_dir: Path | None, **flags: Any) -> None:
    """Sample n answers per problem; write samples.jsonl and run.json to the output directory.

    \b
    Re-running with the same output directory generates only the samples still missing.
    Several GPUs: torchrun --nproc-per-node N -m thinkfast generate ...
    """
    from thinkfast.cli import err_console
    from thinkfast.generate.runner import run_generate

    loaded = load_recipe(recipe, overrides, extra=flags_to_recipe(flags), defaults=derived_defaults(flags),
                         flags=flag_keys(flags))
    check_input_files(loaded.generate.data, source=loaded.source, path="generate.data",
                      overrides=loaded.override_spans)  # before the output directory or a model
    with output_directory(resolve_output_dir(loaded, output_dir, "generate")) as out_dir:
        summary = run_generate(loaded, out_dir, console=err_console)
    if summary:
        err_console.print(
            f"{summary['num_samples']} samples of {summary['num_problems']} problems in {out_dir} "
            f"({summary['new_samples']} new, {summary['new_tokens']} tokens, "
            f"{format_number(summary['tokens_per_second'])} tokens/s on {summary['device']})"
        )
