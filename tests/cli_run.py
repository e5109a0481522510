"""The CLI run in the test's own process, shared by the CLI error tests (pytest puts ``tests/`` on the path)."""

from __future__ import annotations

from click.testing import CliRunner, Result

from thinkfast.cli import cli


def thinkfast(*args: str) -> Result:
    """``thinkfast ARGS`` in this process; a Python exception other than SystemExit fails the test."""
    return CliRunner().invoke(cli, list(args), prog_name="thinkfast", catch_exceptions=False)
