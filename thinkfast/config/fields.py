"""Declaring config fields: a default, a help text, units and allowed values in one place.

Every recipe section is a dataclass whose fields are declared with :func:`option`. The
validator (:mod:`thinkfast.config.validate`) and the generated recipe reference both read
this metadata, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    unit: str | None = None,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
    plugin: str | None = None,
    default_factory: Any = dataclasses.MISSING,
    parse: Any = None,
) -> Any:
    """A dataclass field with validation metadata.

    ``plugin`` names a plugin family (``"aggregators"``...): the value (or each list item) must
    be a registered name in it. ``min``/``max`` bound numbers (inclusive), ``choices`` strings.
    Mutable defaults (lists, dicts) go through ``default_factory``. ``parse``: a function applied to the
    value as written in the recipe (or ``--set``) before its type is checked, e.g. ``"8k"`` -> ``8192``; its
    :class:`ValueError` is reported as the key's problem.
    """
    metadata = {"help": help, "unit": unit, "min": min, "max": max, "choices": choices, "plugin": plugin,
                "parse": parse}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
