"""Turning plain dicts (parsed TOML) into config dataclasses, collecting every problem.

:func:`from_dict` walks a dataclass's fields, checks types, ranges, choices and plugin names,
and reports *all* problems at once as a :class:`~thinkfast.errors.RecipeError`, each naming the
file (or the ``--set`` item that gave the key its value), the key path, the bad value and a fix.

A dataclass that names a plugin and carries that plugin's options declares two class variables,
``plugin_family`` and ``plugin_field`` (the field holding the plugin's name), plus an
``options: dict`` field. The options are then validated against the plugin component's
``Options`` dataclass (if it has one) and replaced by the full set, defaults filled in.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Union, get_args, get_origin

from thinkfast.errors import RecipeError
from thinkfast.suggest import did_you_mean


@dataclasses.dataclass(frozen=True)
class OverrideSpan:
    """A key path that the command line gave its value, a ``--set`` item or a flag, so that a problem found
    there names what the user typed (the item's key and value, or the flag) instead of the recipe file.

    ``key`` is the item's own key path and ``path`` one it set: the key itself, a key of a table value
    (``--set 'generate.data={ limit = 5 }'`` sets ``generate.data.limit``) or a table the item created on
    its way. ``subtree``: every key under ``path`` too (its value is not a table: it replaced them all).
    ``flag``: ``item`` is a flag as its errors spell it (``--device``, ``--n/--n-samples``), not a ``--set`` item.
    """

    item: str
    key: str
    path: str
    subtree: bool
    flag: bool = False

    def covers(self, path: str) -> bool:
        return path == self.path or (self.subtree and path.startswith((f"{self.path}.", f"{self.path}[")))

    @property
    def given_as(self) -> str:
        """What the user typed, as a message names it: ``--device`` or ``--set 'run.device=gpu'``."""
        return self.item if self.flag else f"--set {self.item!r}"


def flag_spans(flags: dict[str, str]) -> list[OverrideSpan]:
    """Spans for values that flags set: ``{key path: flag}``, e.g. ``{"run.device": "--device"}``. Each
    covers its key's subtree; where two cover a key, the later one names it (as for ``--set``)."""
    return [OverrideSpan(flag, path, path, subtree=True, flag=True) for path, flag in flags.items()]


class Problems:
    """Collects problems found while validating one file; those at a key set on the command line, by a
    flag or a ``--set`` item (one of ``overrides``, in the order they were applied: the last one covering a
    key set it), name that flag or item instead."""

    def __init__(self, source: str, overrides: Sequence[OverrideSpan] = ()):
        self.source = source
        self.overrides = tuple(overrides)
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        span = next((s for s in reversed(self.overrides) if s.covers(path)), None)
        if span is not None:
            where = "" if path == span.key else f"{path}: "
            self.items.append(f"{span.given_as}: {where}{message}")
            return
        where = f"{self.source}: " if self.source else ""
        self.items.append(f"{where}{path or '<top level>'}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise RecipeError(self.items)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin is list:
        (item,) = get_args(tp) or (Any,)
        return f"list of {_type_name(item)}"
    if origin is dict:
        return "table"
    if dataclasses.is_dataclass(tp):
        return "table"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _convert(value: Any, tp: Any, path: str, problems: Problems, meta: dict[str, Any]) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial = Problems(problems.source, problems.overrides)
            converted = _convert(value, arg, path, trial, meta)
            if not trial.items:
                return converted
        problems.add(path, f"expected {_type_name(tp)}, got {value!r}")
        return None
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            problems.add(path, f"{value!r} is not one of {', '.join(map(repr, allowed))}"
                         f"{did_you_mean(str(value), map(str, allowed))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.add(path, f"expected {_type_name(tp)}, got {value!r}")
            return []
        (item_tp,) = get_args(tp) or (Any,)
        return [_convert(v, item_tp, _join(path, i), problems, meta) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            problems.add(path, f"expected a table, got {value!r}")
            return {}
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.add(path, f"expected a table, got {value!r}")
            return tp()
        return _build(tp, value, path, problems)
    if tp is bool:
        if not isinstance(value, bool):
            problems.add(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.add(path, f"expected an integer, got {value!r}")
            return value
        _check_range(value, path, problems, meta)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.add(path, f"expected a number, got {value!r}")
            return value
        _check_range(value, path, problems, meta)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.add(path, f"expected a string, got {value!r}")
            return value
        choices = meta.get("choices")
        if choices and value not in choices:
            problems.add(path, f"{value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}")
        return value
    return value


def _check_range(value: float, path: str, problems: Problems, meta: dict[str, Any]) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        problems.add(path, f"{value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        problems.add(path, f"{value!r} is above the maximum {hi}")


def _check_plugin(value: Any, family: str, path: str, problems: Problems, optional: bool = False) -> None:
    """Each name in ``value`` must be registered in ``family`` (``auto`` always passes; ``""`` too when the
    field is ``optional``, i.e. its default is the empty string)."""
    from thinkfast.registry import get_registry

    registry = get_registry()
    names = registry.names(family)
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        if not isinstance(item, str) or item == "auto" or (optional and item == ""):
            continue
        if item not in names:
            where = _join(path, i) if isinstance(value, list) else path
            problems.add(where, registry.not_found(family, item))


def _over_default_section(f: dataclasses.Field, value: Any) -> Any:
    """A partial table for a section whose default is not the section class's own defaults (such as
    ``generate.data``, whose default reads gsm8k/test) keeps that default's other keys."""
    if not isinstance(value, dict) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return {**to_dict(default), **value}


def _build(cls: type, data: dict[str, Any], path: str, problems: Problems) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    found = len(problems.items)
    for key, value in data.items():
        if key not in fields:
            valid = f"valid keys here: {', '.join(fields)}" if fields else "this table takes no keys"
            problems.add(_join(path, key), f"unknown key{did_you_mean(key, fields)}; {valid}")
            continue
        f = fields[key]
        meta = dict(f.metadata)
        value = _over_default_section(f, value)
        if meta.get("parse") is not None:
            try:
                value = meta["parse"](value)
            except ValueError as exc:
                problems.add(_join(path, key), str(exc))
                continue
        converted = _convert(value, hints[key], _join(path, key), problems, meta)
        if meta.get("plugin"):
            _check_plugin(value, meta["plugin"], _join(path, key), problems, optional=f.default == "")
        kwargs[key] = converted
    missing = [name for name, f in fields.items() if name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in missing:
        problems.add(_join(path, name), "required key is missing")
    if missing:
        return None
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.add(path, str(exc))
        return None
    check = getattr(obj, "check", None)
    if callable(check) and len(problems.items) == found:  # cross-field rules see only values of the right type
        for key, message in check() or []:
            problems.add(_join(path, key), message)
    return obj


def _validate_plugin_options(obj: Any, path: str, problems: Problems) -> None:
    family = getattr(obj, "plugin_family", None)
    field_name = getattr(obj, "plugin_field", None)
    if not family or not field_name or not hasattr(obj, "options"):
        return
    name = getattr(obj, field_name)
    from thinkfast.registry import get_registry

    registry = get_registry()
    if not isinstance(name, str) or name not in registry.names(family):
        return  # already reported by the plugin-name check
    options_cls = getattr(registry.get(family, name), "Options", None)
    if options_cls is None or not dataclasses.is_dataclass(options_cls):
        return
    built = _build(options_cls, obj.options or {}, _join(path, "options"), problems)
    if built is not None:
        obj.options = to_dict(built)


def from_dict(cls: type, data: dict[str, Any], *, source: str = "", path: str = "",
              overrides: Sequence[OverrideSpan] = ()) -> Any:
    """Build ``cls`` from ``data``; raise :class:`RecipeError` listing every problem.

    A dataclass may define ``check(self) -> list[tuple[key, message]]`` for cross-field rules; it runs
    only when the table's own keys passed their checks, so it never sees a value of the wrong type. A
    problem at a key that ``overrides`` set names the flag or ``--set`` item instead of ``source``.
    """
    problems = Problems(source, overrides)
    obj = _build(cls, data, path, problems)
    if obj is not None:
        _validate_all_plugin_options(obj, path, problems)
    problems.raise_if_any()
    return obj


def _config_nodes(obj: Any, path: str) -> Iterator[tuple[Any, str]]:
    """Every dataclass in the built tree under ``obj`` (lists included) with its key path, parents first;
    plugin ``options`` tables are not entered."""
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _config_nodes(item, _join(path, i))
        return
    if not dataclasses.is_dataclass(obj):
        return
    yield obj, path
    for f in dataclasses.fields(obj):
        if f.name != "options":
            yield from _config_nodes(getattr(obj, f.name), _join(path, f.name))


def _validate_all_plugin_options(obj: Any, path: str, problems: Problems) -> None:
    """Check every plugin ``options`` table in the built tree and fill in its defaults, whether the section
    came from the file or from defaults."""
    for node, node_path in _config_nodes(obj, path):
        _validate_plugin_options(node, node_path, problems)


def check_input_files(obj: Any, *, source: str = "", path: str = "",
                      overrides: Sequence[OverrideSpan] = ()) -> None:
    """Raise :class:`RecipeError` listing every input file that ``obj`` (a recipe or one of its sections)
    names and that does not exist: each dataclass in the tree with a ``missing_files()`` method (such as
    :class:`~thinkfast.config.common.DataSpec`) reports its own. A file named by a flag or a ``--set``
    item (``overrides``, a recipe's ``override_spans``) is reported against that flag or item."""
    problems = Problems(source, overrides)
    for node, node_path in _config_nodes(obj, path):
        missing = getattr(node, "missing_files", None)
        if callable(missing):
            for key, message in missing():
                problems.add(_join(node_path, key), message)
    problems.raise_if_any()


def to_dict(obj: Any) -> Any:
    """A config object as plain TOML-compatible data (None values dropped)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = to_dict(getattr(obj, f.name))
            if value is not None:
                out[f.name] = value
        return out
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items() if v is not None}
    return obj
