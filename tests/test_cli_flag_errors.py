"""A flag whose value the recipe validation checks: a bad value names the flag the user typed (not the recipe key
it sets, nor ``<command line>``) and keeps the fix; a ``--set`` item still names itself and a recipe file its
file and key. An empty value, or a zero that a recipe key reads as "derive it", is refused by the flag instead
of meaning "not given" (or, for a path, the current directory). All through the real CLI, before any model or
dataset loads."""

from __future__ import annotations

import click
import pytest
from cli_run import subcommands, thinkfast


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Each test runs in an empty directory, so an output directory written by mistake would show."""
    monkeypatch.chdir(tmp_path)


def error_lines(result) -> list[str]:
    """The error lines of a user error (exit 2, no traceback): the one ``error:`` line, or the counted list's."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    if len(lines) == 1:
        assert lines[0].startswith("error: "), result.stderr
        return [lines[0].removeprefix("error: ")]
    assert lines[0] == f"{len(lines) - 1} errors:", result.stderr
    return [line.removeprefix("- ") for line in lines[1:]]


# --- a value the recipe refuses names the flag ----------------------------------------------------------

@pytest.mark.parametrize("args, line", [
    (("generate", "--device", "gpu"), "--device: 'gpu' is not 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (("generate", "--dataset", "gsm8kk"),
     "--dataset: no datasets plugin named 'gsm8kk' (did you mean 'gsm8k'?); installed: "),
    (("generate", "--data-path", "nope.jsonl"),
     "--data-path: nope.jsonl does not exist (relative to the current directory); point it at a .jsonl"),
    (("evaluate", "--aggregator", "majorty"),
     "--aggregator: no aggregators plugin named 'majorty' (did you mean 'majority'?); installed: "),
    (("evaluate", "--aggregator", "majority", "--aggregator", "majorty"), "--aggregator: no aggregators plugin "),
    (("evaluate", "--aggregator", "majority", "--aggregator", "majority"),
     "--aggregator: 'majority' given twice; name each aggregator once"),
    (("profile", "--dry-run", "--device", "gpu"), "--device: 'gpu' is not 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (("profile", "--dry-run", "--dtype", "f16"), "--dtype: 'f16' is not one of auto, float32, bfloat16, float16 "
                                                 "(did you mean 'float16'?)"),
    (("profile", "--dry-run", "--baseline", "zz"), "--baseline: 'zz' is not one of models "),
    (("profile", "--dry-run", "--models", ","), "--models: empty; name at least one model"),
], ids=lambda value: " ".join(value) if isinstance(value, tuple) else "")
def test_a_value_the_recipe_refuses_names_the_flag(args, line, tmp_path):
    (problem,) = error_lines(thinkfast(*args))
    assert problem.startswith(line), problem
    assert not any(tmp_path.iterdir()), "a refused flag must not create the output directory"


def test_every_problem_names_its_flag_and_a_recipe_files_names_the_file_and_key(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[generate]\nn_samples = 0\n")
    problems = error_lines(thinkfast("generate", str(recipe), "--dataset", "gsm8kk", "--device", "gpu"))
    assert sorted(p.split(":")[0] for p in problems) == ["--dataset", "--device", str(recipe)], problems
    assert f"{recipe}: generate.n_samples: 0 is below the minimum 1" in problems


def test_a_set_item_names_itself_and_wins_over_the_flag_it_overrides():
    (problem,) = error_lines(thinkfast("generate", "--device", "cpu", "--set", "run.device=tpu"))
    assert problem == "--set 'run.device=tpu': 'tpu' is not 'auto', 'cpu', 'cuda' or 'cuda:N'"
    (problem,) = error_lines(thinkfast("generate", "--device", "gpu", "--set", "run.device=cpu",
                                       "--set", "generate.data.dataset=gsm8kk"))
    assert problem.startswith("--set 'generate.data.dataset=gsm8kk': no datasets plugin named 'gsm8kk'"), problem


def test_a_flag_overridden_by_set_is_not_named_for_the_value_set_gave():
    """--dataset set the key, then --set replaced its value: a problem there is the --set item's."""
    (problem,) = error_lines(thinkfast("generate", "--dataset", "gsm8k", "--set", "generate.data.dataset=mth"))
    assert problem.startswith("--set 'generate.data.dataset=mth': "), problem


# --- empty and zero values are refused, not read as "not given" ------------------------------------------

def _empty_values():
    """(args, name): every text or path option, and every argument, of every subcommand given ``''``."""
    for path, command in subcommands():
        recipe = ("r.toml",) if any(isinstance(p, click.Argument) and p.required for p in command.params) else ()
        dry_run = ("--dry-run",) if any(p.name == "dry_run" for p in command.params) else ()  # never measure
        for param in command.params:
            if isinstance(param, click.Argument):
                args = (*path, *dry_run, "")
            elif isinstance(param, click.Option) and not param.is_flag and param.name != "help" and isinstance(
                    param.type, (click.types.StringParamType, click.Path)):
                args = (*path, *recipe, *dry_run, param.opts[0], "")
            else:
                continue
            name = "/".join(param.opts) if isinstance(param, click.Option) else param.human_readable_name
            yield pytest.param(args, name, id=" ".join(a or "''" for a in args))


@pytest.mark.parametrize("args, name", list(_empty_values()))
def test_every_option_and_argument_refuses_an_empty_value_naming_it(args, name, tmp_path):
    """Whatever text or path option a later change adds: ``--x ''`` (often an unset shell variable) is an error
    naming it, never the flag's absence, the current directory or the default."""
    (tmp_path / "r.toml").write_text("")
    (problem,) = error_lines(thinkfast(*args))
    assert problem.startswith(f"{name}: ") or problem.startswith(f"{name} ''"), problem


@pytest.mark.parametrize("args, line", [
    (("distill", ""), "RECIPE: empty; give the path of a .toml recipe file (see thinkfast distill --help)"),
    (("generate", "--data-path", ""), "--data-path: empty; give a .jsonl, .json or .parquet file or a directory "
                                      "of them, or leave the flag out for the dataset's own source"),
    (("generate", "--model", "m", "-o", ""), "--output-dir/-o: empty; give a directory (. for the current one)"),
    (("evaluate", "--runs", ""), "--runs: empty; give a `thinkfast generate` output directory"),
    (("evaluate", "--aggregator", ""), "--aggregator: empty; give an aggregators plugin name (see thinkfast "
                                       "plugins), or leave the flag out for evaluate.aggregators"),
    (("generate", "--model", "m", "--dataset", ""), "--dataset: empty; give a datasets plugin name (see thinkfast "
                                                    "plugins), or leave the flag out for generate.dataset"),
    (("profile", "--dry-run", "--gen-len", "0"),
     "--gen-len: '0' is below the minimum 1 token; leave the flag out to derive it from the other lengths"),
    (("profile", "--dry-run", "--prompt-len", "0k"), "--prompt-len: '0k' is below the minimum 1 token; "),
    (("profile", "--dry-run", "--memory-cap", "0G"),
     "--memory-cap: '0G' leaves no memory; give a limit such as 40G, or leave the flag out for the device's memory"),
    (("profile", "--dry-run", "--bandwidth", "0"), "--bandwidth: '0' is out of range; use a number above 0"),
    (("profile", "--dry-run", "--baseline", ""), "--baseline: empty; give one of --models"),
], ids=lambda value: " ".join(a or "''" for a in value) if isinstance(value, tuple) else "")
def test_an_empty_or_zero_flag_value_is_an_error_naming_what_to_give(args, line, tmp_path):
    (problem,) = error_lines(thinkfast(*args))
    assert problem.startswith(line), problem
    assert not any(tmp_path.iterdir()), "a refused flag must not create the output directory"
