"""The ``thinkfast`` command line: one click group, one module per subcommand."""

from __future__ import annotations

import sys
import traceback

import click
from rich.console import Console

from thinkfast import __version__
from thinkfast.cli.crash import report_crash
from thinkfast.cli.ranks import defer_to_rank_zero, in_multi_rank_job, is_main_rank
from thinkfast.cli.usage_errors import command_line_error, is_help
from thinkfast.errors import ThinkfastError
from thinkfast.plugin_guard import third_party_error, traceback_wanted

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class ThinkfastGroup(click.Group):
    """A click group that turns :class:`ThinkfastError` into one message and exit code 2.

    A mistake on the command line (click's usage errors: a bad flag value, an unknown option) is one such
    message too, naming the flag and the fix (:mod:`thinkfast.cli.usage_errors`), not click's usage block.
    An exception of any other type is thinkfast's own bug and keeps its traceback, unless it came from a
    third-party plugin's code (:func:`thinkfast.plugin_guard.third_party_error`): that is one message naming
    the plugin. ``THINKFAST_TRACEBACK=1`` prints the traceback above every such message. Under ``torchrun``
    rank 0 reports for the job (:mod:`thinkfast.cli.ranks`): the other ranks print an error only when rank 0
    did not stop with it, and stay quiet on Ctrl-C; a crash prints its traceback once, not once per rank
    (:mod:`thinkfast.cli.crash`).
    """

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # the group's own options: thinkfast --bogus
            if is_help(exc):
                raise
            _report(command_line_error(exc), exc)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ThinkfastError as exc:
            _report(exc, exc)
        except KeyboardInterrupt:
            if is_main_rank():
                err_console.print("interrupted; anything already written is kept", style="yellow")
            sys.exit(130)
        except click.UsageError as exc:
            if is_help(exc):
                raise
            _report(command_line_error(exc, ctx), exc)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own ways to stop (--help, --version): click handles them
        except Exception as exc:
            plugin = third_party_error(exc)
            if plugin is not None:
                _report(plugin, exc)
            if in_multi_rank_job():
                report_crash(exc)
            raise


def _report(error: ThinkfastError, raised: BaseException) -> None:
    """Print ``error`` (after the traceback of ``raised`` when ``THINKFAST_TRACEBACK`` asks) and exit; under
    torchrun a rank other than 0 first gives rank 0 the chance to report it (:func:`defer_to_rank_zero`)."""
    prefix = defer_to_rank_zero()
    if traceback_wanted():
        traceback.print_exception(raised, file=sys.stderr)
    _print_error(error, prefix)
    sys.exit(error.exit_code)


def _print_error(exc: ThinkfastError, prefix: str = "") -> None:
    """One line for one problem; a counted list for several. ``prefix`` names the rank that reports."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    if len(lines) == 1:
        err_console.print(f"[bold red]{prefix}error:[/bold red] ", end="")
        err_console.print(lines[0], markup=False)
        return
    err_console.print(f"[bold red]{prefix}{len(lines)} errors:[/bold red]")
    for line in lines:
        err_console.print(f"  - {line}", markup=False)


@click.group(cls=ThinkfastGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="thinkfast")
def cli() -> None:
    """thinkfast: distill Transformers into fast Mamba reasoners and measure accuracy per second.

    \b
    distill   train a student from a teacher, stage by stage, from a TOML recipe
    generate  sample many answers per problem, timed
    evaluate  grade samples; coverage and accuracy vs samples and vs seconds
    profile   throughput and memory over a batch x length grid

    \b
    Environment:
    THINKFAST_PLUGINS=a,b          load only these third-party plugins (empty: built-ins only)
    THINKFAST_TRACEBACK=1          print the traceback above an error shown in one line
    THINKFAST_PROGRESS_SECONDS=60  seconds between progress lines in a log (stderr no terminal; 0: none)
    """
    from thinkfast.progress import log_interval, quiet_library_bars

    log_interval()  # a bad THINKFAST_PROGRESS_SECONDS is one message before any work, not after a model loads
    quiet_library_bars(err_console)


def _register_commands() -> None:
    from thinkfast.cli import distill, evaluate, generate, plugins, profile, recipe

    for module in (distill, generate, evaluate, profile, plugins, recipe):
        cli.add_command(module.command)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="thinkfast")
