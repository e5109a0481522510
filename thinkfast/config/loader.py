"""Reading recipe files: TOML parsing, ``include`` merging and ``--set`` overrides."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from thinkfast.config.validate import OverrideSpan, flag_spans
from thinkfast.data.files import BOM
from thinkfast.errors import RecipeError


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; a syntax error names the file and line, a file that cannot be read says why."""
    try:
        raw = path.read_bytes()
        return tomllib.loads(raw.removeprefix(BOM).decode("utf-8"))
    except FileNotFoundError:
        raise RecipeError([f"{path}: recipe file not found"]) from None
    except IsADirectoryError:
        raise RecipeError([f"{path}: is a directory, not a recipe file; give the path of a .toml file"]) from None
    except OSError as exc:
        raise RecipeError([f"{path}: cannot read the recipe: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1  # worded as a data file's (file:line, the byte's value)
        raise RecipeError([f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}), so not a TOML "
                           f"recipe; save it as UTF-8"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{path}: not valid TOML: {exc}"]) from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: tables merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_with_includes(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe with its ``include`` chain resolved (relative to the including file)."""
    path = path.resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise RecipeError([f"{path}: include: recipes include each other in a cycle ({chain})"])
    data = read_toml(path)
    includes = data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise RecipeError([f"{path}: include: expected a path or a list of paths, got {includes!r}"])
    merged: dict[str, Any] = {}
    for inc in includes:
        inc_path = (path.parent / inc)
        if not inc_path.exists():
            raise RecipeError([f"{path}: include: {inc!r} not found (looked for {inc_path})"])
        merged = deep_merge(merged, read_with_includes(inc_path, (*_seen, path)))
    return deep_merge(merged, data)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string: --set student.kind=llamba


_INDEX = re.compile(r"^(?P<name>[^\[\]]*)((?:\[\d+\])*)$")


def _override_path(item: str, key: str) -> list[str | int]:
    """``"distill.stages[1].lr"`` or ``"distill.stages.1.lr"`` -> ``["distill", "stages", 1, "lr"]``."""
    path: list[str | int] = []
    for part in (p for p in key.strip().split(".") if p):
        match = _INDEX.match(part)
        if match is None:
            raise RecipeError([f"--set {item!r}: cannot read the key part {part!r}; write a list index as "
                               f"[N] or .N, e.g. --set distill.stages[0].lr=3e-4"])
        name = match.group("name")
        if name:
            path.append(int(name) if name.isascii() and name.isdigit() else name)
        path.extend(int(i) for i in re.findall(r"\[(\d+)\]", part))
    if not path:
        raise RecipeError([f"--set {item!r}: the key is empty"])
    return path


def _dotted(path: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _set_spans(item: str, key: str, path: str, value: Any) -> list[OverrideSpan]:
    """The key paths ``item`` sets by giving ``path`` the ``value``: every key of a table value, recursively."""
    if not isinstance(value, dict):
        return [OverrideSpan(item, key, path, subtree=True)]
    spans = [OverrideSpan(item, key, path, subtree=False)]
    for name, sub in value.items():
        spans += _set_spans(item, key, f"{path}.{name}", sub)
    return spans


def apply_overrides(data: dict[str, Any], items: tuple[str, ...] | list[str],
                    spans: list[OverrideSpan] | None = None) -> dict[str, Any]:
    """``data`` with each ``KEY.PATH=VALUE`` of ``items`` set (values are TOML, bare words strings).

    A key part that is a number, or ends in ``[N]``, selects entry N of a list of tables (``--set
    distill.stages[1].lr=3e-4`` or ``distill.stages.1.lr=3e-4``); the entry must exist. A table value
    merges into the table it replaces. ``data`` is not modified. ``spans`` (optional) gets the key paths
    each item set, in order, for validation to word a problem there against the item.
    """
    out = copy.deepcopy(data)
    for item in items:
        if "=" not in item:
            raise RecipeError([f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set generate.n_samples=16"])
        key, raw = item.split("=", 1)
        path = _override_path(item, key)
        dotted = _dotted(path)
        node: Any = out
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            where = _dotted(path[:depth]) or "the recipe"
            if isinstance(part, int):
                if not isinstance(node, list):
                    raise RecipeError([f"--set {item!r}: {where} is not a list, so [{part}] selects nothing; "
                                       f"an index selects an entry of a list of tables such as distill.stages"])
                if part >= len(node):
                    raise RecipeError([f"--set {item!r}: {where} has {len(node)} entries (indices 0 to "
                                       f"{len(node) - 1}); --set can change an entry but not add one"])
            elif not isinstance(node, dict):
                raise RecipeError([f"--set {item!r}: {where} is not a table, so it has no key {part!r}"])
            if last:
                value = _parse_value(raw.strip())
                current = node[part] if isinstance(node, list) else node.get(part)
                both_tables = isinstance(current, dict) and isinstance(value, dict)
                node[part] = deep_merge(current, value) if both_tables else value
                if spans is not None:
                    spans += _set_spans(item, dotted, dotted, value)
            else:
                if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}  # a missing key (or a value in the way) becomes a table
                    if spans is not None:
                        spans.append(OverrideSpan(item, dotted, _dotted(path[:depth + 1]), subtree=False))
                node = node[part]
    return out


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``: :func:`apply_overrides` on an empty recipe."""
    return apply_overrides({}, items)


def load_recipe(path: str | Path | None, overrides: tuple[str, ...] | list[str] = (), *,
                extra: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None,
                flags: dict[str, str] | None = None):
    """Read, merge and validate a recipe into a :class:`~thinkfast.config.schema.Recipe`.

    ``path`` None builds a recipe from defaults, ``defaults`` (values a command derives from its flags,
    as a nested dict), the file, ``extra`` (CLI flags as a nested dict) and ``overrides``, in that order of
    increasing precedence. ``flags`` names the flag that gave each key path of ``extra`` its value
    (``{"run.device": "--device"}``). Every problem is reported at once; one at a key that a flag or a
    ``--set`` item set names that flag or item (the recipe keeps them in ``override_spans``), not the file.
    """
    from thinkfast.config.schema import Recipe
    from thinkfast.config.validate import from_dict

    data: dict[str, Any] = {}
    source = "<command line>"
    if path is not None:
        path = Path(path)
        data = read_with_includes(path)
        source = str(path)
    if defaults:
        data = deep_merge(defaults, data)
    if extra:
        data = deep_merge(data, extra)
    spans: list[OverrideSpan] = flag_spans(flags or {}) if extra else []
    if overrides:
        data = apply_overrides(data, overrides, spans)
    data.pop("include", None)
    recipe = from_dict(Recipe, data, source=source, overrides=spans)
    recipe.source = source
    recipe.override_spans = tuple(spans)
    return recipe
