"""Option value types whose errors say what to write instead.

Drop-in subclasses of click's ``IntRange``, ``FloatRange`` and ``Choice``: ``--help`` shows them exactly as
click does; only a bad value reads differently, e.g. ``'x' is not a number; use a number of at least 0`` or
``'chta' is not one of auto, chat, plain (did you mean 'chat'?)``. :class:`Text` and :class:`PathOf`, click's
text and path types that refuse the empty string (``empty; give a split name such as test or train``): an
empty value is a mistake (often an unset shell variable), not "flag not given" nor the current directory.
The CLI prefixes the flag (:mod:`thinkfast.cli.usage_errors`).
"""

from __future__ import annotations

from typing import Any

import click

from thinkfast.suggest import did_you_mean


def _bounds(kind: str, low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """``"a whole number of at least 1"``, ``"a number from 0 to 1"``, ... : what a range accepts, in words."""
    if low is not None and high is not None and not (low_open or high_open):
        return f"{kind} from {low:g} to {high:g}"
    parts = []
    if low is not None:
        parts.append(f"above {low:g}" if low_open else f"of at least {low:g}")
    if high is not None:
        parts.append(f"below {high:g}" if high_open else f"of at most {high:g}")
    return " ".join([kind, " and ".join(parts)]) if parts else kind


class _ExplainedRange:
    """Mixin for click's number ranges: a value that is not a number, or is out of range, fails with one
    sentence naming what to give."""

    kind: str  # "a whole number" / "a number"
    plain: click.ParamType  # the same type without the range

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)  # type: ignore[misc]
        except click.BadParameter:
            try:
                self.plain.convert(value, param, ctx)
                problem = "is out of range"
            except click.BadParameter:
                problem = f"is not {self.kind}"
            wanted = _bounds(self.kind, self.min, self.max, self.min_open, self.max_open)  # type: ignore[attr-defined]
            self.fail(f"{str(value)!r} {problem}; use {wanted}", param, ctx)  # type: ignore[attr-defined]


class IntRange(_ExplainedRange, click.IntRange):
    """``click.IntRange``: ``'1.5' is not a whole number; use a whole number of at least 0``."""

    kind = "a whole number"
    plain = click.INT


class FloatRange(_ExplainedRange, click.FloatRange):
    """``click.FloatRange``: ``'2' is out of range; use a number from 0 to 1``."""

    kind = "a number"
    plain = click.FLOAT


class Choice(click.Choice):
    """``click.Choice``: ``'chta' is not one of auto, chat, plain (did you mean 'chat'?)``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            choices = [str(choice) for choice in self.choices]
            self.fail(f"{str(value)!r} is not one of {', '.join(choices)}{did_you_mean(str(value), choices)}",
                      param, ctx)


class _NotEmpty:
    """Mixin for a text or path type: an empty value (``--data-path ''``, an unset shell variable) fails with
    one sentence naming what to give, instead of counting as "not given" or as the current directory."""

    wanted: str  # "a split name such as test or train"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "":
            self.fail(f"empty; give {self.wanted}", param, ctx)  # type: ignore[attr-defined]
        return super().convert(value, param, ctx)  # type: ignore[misc]


class Text(_NotEmpty, click.types.StringParamType):
    """Any text but the empty string: ``--split: empty; give a split name such as test or train``."""

    def __init__(self, wanted: str):
        self.wanted = wanted


class PathOf(_NotEmpty, click.Path):
    """``click.Path`` without the empty string, which would mean the current directory:
    ``--output-dir: empty; give a directory (. for the current one)``."""

    def __init__(self, wanted: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.wanted = wanted
