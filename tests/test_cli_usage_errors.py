"""Mistakes on the command line (a bad flag value, an unknown option or command, a missing argument): one line
naming the flag and the fix, ending with where the options are listed, exit code 2 (click's for usage errors),
no usage block and no traceback; ``--help`` is unchanged (tests/test_docs.py holds docs/cli.md to it)."""

from __future__ import annotations

import click
import pytest
from cli_run import subcommands, thinkfast
from click.testing import CliRunner

from thinkfast.cli import cli, ranks


def one_error_line(result) -> str:
    """The single ``error:`` line of a usage error (exit 2, nothing else on stderr or stdout)."""
    assert result.exit_code == 2, result.output
    assert "Usage:" not in result.output and "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not result.stdout.strip(), result.stdout
    return lines[0]


@pytest.mark.parametrize("args, line", [
    (("profile", "--batch", "abc"),
     "error: --batch: 'abc' is not a size; write an integer, optionally with k (x1024) or m, e.g. 512, 8k, 32k "
     "(see thinkfast profile --help)"),
    (("profile", "--seqlen", "8q"), "error: --seqlen: '8q' is not a size; "),
    (("profile", "--batch", "0"), "error: --batch: 0 is below the minimum 1 (see thinkfast profile --help)"),
    (("profile", "--prompt-len", "1.5"),
     "error: --prompt-len: '1.5' is not a whole number of tokens (see thinkfast profile --help)"),
    (("profile", "--memory-cap", "4X"), "error: --memory-cap: memory amount '4X' is not understood; write e.g. 80G"),
    (("profile", "--decode-points", "100"),
     "error: --decode-points: '100' is out of range; use a whole number from 1 to 64 (see thinkfast profile --help)"),
    (("generate", "--temperature", "x"),
     "error: --temperature: 'x' is not a number; use a number of at least 0 (see thinkfast generate --help)"),
    (("generate", "--top-p", "2"), "error: --top-p: '2' is out of range; use a number from 0 to 1 "),
    (("generate", "--limit", "1.5"), "error: --limit: '1.5' is not a whole number; use a whole number of at least 0"),
    (("generate", "--n-samples", "0"), "error: --n/--n-samples: '0' is out of range; use a whole number of at least 1"),
    (("evaluate", "--figure-width", "-1"),
     "error: --figure-width: '-1' is out of range; use a number of at least 0 (see thinkfast evaluate --help)"),
    (("generate", "--template", "chta"),
     "error: --template: 'chta' is not one of auto, chat, plain (did you mean 'chat'?) "
     "(see thinkfast generate --help)"),
    (("generate", "--tempertaure", "0.5"),
     "error: --tempertaure: no such option; did you mean --temperature? (see thinkfast generate --help)"),
    (("generate", "--zzz"), "error: --zzz: no such option (see thinkfast generate --help)"),
    (("plugins", "--jsn"), "error: --jsn: no such option; did you mean --json? (see thinkfast plugins --help)"),
    (("plugins", "--json=yes"), "error: --json: takes no value; write the flag alone (see thinkfast plugins --help)"),
    (("generate", "--model"), "error: --model: needs a value (see thinkfast generate --help)"),
    (("recipe", "validate", "--set"), "error: --set: needs a value (see thinkfast recipe validate --help)"),
    (("--bogus",), "error: --bogus: no such option (see thinkfast --help)"),
    (("genrate",), "error: no command 'genrate'; did you mean generate? (see thinkfast --help)"),
    (("recipe", "frobnicate"),
     "error: no command 'frobnicate'; use one of show, validate (see thinkfast recipe --help)"),
    (("distill",),
     "error: missing RECIPE; usage: thinkfast distill [OPTIONS] RECIPE (see thinkfast distill --help)"),
    (("generate", "a.toml", "b.toml"),
     "error: got unexpected extra argument (b.toml); usage: thinkfast generate [OPTIONS] [RECIPE] "
     "(see thinkfast generate --help)"),
], ids=lambda value: " ".join(value) if isinstance(value, tuple) else "")
def test_a_command_line_mistake_is_one_line_naming_the_flag_and_the_fix(args, line):
    assert one_error_line(thinkfast(*args)).startswith(line)


#: Option types that refuse some values (a string or a path option takes anything the shell can pass).
CHECKED_TYPES = (click.types.IntParamType, click.types.FloatParamType, click.Choice)


def _bad_uses():
    """(args, flag): a value every option that checks its value refuses, and a value given to every switch."""
    for path, command in subcommands():
        recipe = ("r.toml",) if any(isinstance(p, click.Argument) and p.required for p in command.params) else ()
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            flag = param.opts[0]
            if param.is_flag:
                args = (*path, *recipe, f"{flag}=x")
            elif param.callback is not None or isinstance(param.type, CHECKED_TYPES):
                args = (*path, *recipe, flag, "x!")
            else:
                continue
            yield pytest.param(args, flag, id=" ".join(args))


@pytest.mark.parametrize("args, flag", list(_bad_uses()))
def test_every_option_refuses_a_bad_value_in_one_line(args, flag):
    """Whatever option a later change adds, a bad value for it is one line that names it and the command."""
    command = " ".join(arg for arg in args if not arg.startswith("-") and arg != "r.toml" and arg != "x!")
    line = one_error_line(thinkfast(*args))
    assert line.startswith(f"error: {flag}") and line.endswith(f"(see thinkfast {command} --help)"), line
    # and it says what to write: not click's own wording ("'x!' is not a valid float range.", "... is not in the
    # range x>=0.0"), which a plain click type gives (thinkfast.cli.param_types has the types that explain)
    assert "is not a valid" not in line and "is not in the range" not in line, line


def test_under_torchrun_a_command_line_mistake_defers_to_rank_zero_like_any_user_error(monkeypatch):
    """Every rank parses the same command line: rank 0 reports; another rank only if rank 0 carried on."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(ranks, "RANK_ZERO_GRACE_S", 0.0)
    result = CliRunner().invoke(cli, ["profile", "--batch", "abc"], prog_name="thinkfast")
    assert result.exit_code == 2
    assert result.stderr.startswith("rank 1: error: --batch: 'abc' is not a size"), result.stderr


def test_help_and_version_still_work():
    assert thinkfast("generate", "--help").output.startswith("Usage: thinkfast generate [OPTIONS] [RECIPE]")
    assert thinkfast("--version").output.startswith("thinkfast, version ")
    bare = thinkfast("recipe")  # a group without its subcommand shows its help, as click does
    assert "Commands:" in bare.output and "error:" not in bare.output
