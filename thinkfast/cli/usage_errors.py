"""A mistake on the command line (a bad flag value, an unknown option or command, a missing argument) as one
line naming the flag and the fix, instead of click's usage block.

:func:`command_line_error` turns click's :class:`click.UsageError` into a :class:`CommandLineError` (a
:class:`~thinkfast.errors.ThinkfastError`, exit code 2 as click's), which the CLI reports like any other user
error: ``--batch: 'abc' is not a size; ... (see thinkfast profile --help)``. ``--help`` is left alone, and so
is a group run without a subcommand (click prints its help).
"""

from __future__ import annotations

import click

from thinkfast.errors import ThinkfastError
from thinkfast.suggest import closest

#: click >= 8.4 raises this for an unknown subcommand; older versions a plain UsageError.
_NoSuchCommand = getattr(click.exceptions, "NoSuchCommand", ())
#: click >= 8.2 raises this to print a group's help when it is run without a subcommand.
_NoArgsIsHelp = getattr(click.exceptions, "NoArgsIsHelpError", ())


class CommandLineError(ThinkfastError):
    """A flag, option or argument the command cannot use as given."""


def is_help(exc: click.UsageError) -> bool:
    """Whether ``exc`` is click printing a group's help (``thinkfast recipe`` alone), which stays as it is."""
    return isinstance(exc, _NoArgsIsHelp)


def command_line_error(exc: click.UsageError, group_ctx: click.Context | None = None) -> CommandLineError:
    """One line for ``exc``: what is wrong, with which flag, and (after ``;``) what to write instead, ending
    with where the options are listed: ``(see thinkfast generate --help)``. ``group_ctx``, the context of the
    group that was invoking a subcommand, names the command when click's error does not (a missing value)."""
    ctx = exc.ctx or _invoked_subcommand(group_ctx)
    command = ctx.command_path if ctx is not None else "thinkfast"
    return CommandLineError(f"{_problem(exc, ctx)} (see {command} --help)")


def _problem(exc: click.UsageError, ctx: click.Context | None) -> str:
    """The line without its ``(see ... --help)`` tail, by the kind of mistake click found."""
    if isinstance(exc, click.NoSuchOption):
        names = _option_names(ctx.command) if ctx is not None else []
        match = closest(exc.option_name, names)
        fix = f"; did you mean {match}?" if match else ""
        return f"{exc.option_name}: no such option{fix}"
    if isinstance(exc, _NoSuchCommand):
        commands = list(getattr(ctx.command, "commands", {})) if ctx is not None else []
        match = closest(exc.command_name, commands)
        fix = f"did you mean {match}?" if match else f"use one of {', '.join(sorted(commands))}"
        return f"no command {exc.command_name!r}; {fix}"
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        return f"missing {param_name(exc.param)}; usage: {_usage(ctx)}"
    if isinstance(exc, click.BadParameter) and exc.param is not None:
        return f"{param_name(exc.param)}: {_sentence(exc.message)}"
    if isinstance(exc, click.BadOptionUsage):
        return f"{exc.option_name}: {_option_usage(exc)}"
    return f"{_sentence(exc.message)}; usage: {_usage(ctx)}"  # e.g. an unexpected extra argument


def _invoked_subcommand(group_ctx: click.Context | None) -> click.Context | None:
    """A context (unparsed) for the subcommand ``group_ctx`` was invoking, else ``group_ctx`` itself."""
    if group_ctx is None or not isinstance(group_ctx.command, click.Group) or not group_ctx.invoked_subcommand:
        return group_ctx
    command = group_ctx.command.get_command(group_ctx, group_ctx.invoked_subcommand)
    if command is None:
        return group_ctx
    return click.Context(command, info_name=group_ctx.invoked_subcommand, parent=group_ctx)


def _option_names(command: click.Command) -> list[str]:
    """Every spelling of every option of ``command`` (``--n``, ``--n-samples``, ``--no-compile``, ``-o``)."""
    return [name for param in command.params if isinstance(param, click.Option)
            for name in param.opts + param.secondary_opts]


def param_name(param: click.Parameter) -> str:
    """``--n/--n-samples`` for an option, ``RECIPE`` for an argument."""
    if isinstance(param, click.Option):
        return "/".join(param.opts)
    return param.human_readable_name


def _option_usage(exc: click.BadOptionUsage) -> str:
    """What was wrong with how an option was given, without click's "Option '--x'" in front."""
    message = exc.message
    if "requires an argument" in message:
        return "needs a value"
    if "does not take a value" in message:
        return "takes no value; write the flag alone"
    return _sentence(message.replace(f"Option {exc.option_name!r} ", ""))


def _usage(ctx: click.Context | None) -> str:
    """``thinkfast generate [OPTIONS] [RECIPE]``: the usage line, on one line whatever the terminal width."""
    if ctx is None:
        return "thinkfast [OPTIONS] COMMAND [ARGS]..."
    return " ".join([ctx.command_path, *ctx.command.collect_usage_pieces(ctx)])


def _sentence(message: str) -> str:
    """click's "Got unexpected extra argument (b)." as part of a line: no final period, and a capitalized first
    word (not a name such as ``RECIPE``) in lower case."""
    message = message.strip().rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        return message[:1].lower() + message[1:]
    return message
