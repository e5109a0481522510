"""A small TOML writer for resolved recipes (``thinkfast recipe show``, run metadata)."""

from __future__ import annotations

import json
from typing import Any


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def toml_value(value: Any) -> str:
    """``value`` (a bool, number, string, or a list or dict of them) as a TOML value on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dumps(data: dict[str, Any], _prefix: str = "") -> str:
    """TOML text for ``data`` (nested dicts become tables, lists of dicts arrays of tables)."""
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value and any(isinstance(v, (dict, list)) for v in value.values()) \
                or isinstance(value, dict) and _prefix == "":
            nested.append((key, value))
        elif _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {toml_value(value)}")
    out = "\n".join(lines)
    for key, value in nested:
        name = f"{_prefix}{_key(key)}"
        if isinstance(value, dict):
            body = dumps(value, f"{name}.")
            out += f"\n\n[{name}]\n{body}".rstrip() if body else f"\n\n[{name}]"
        else:
            for item in value:
                body = dumps(item, f"{name}.")
                out += f"\n\n[[{name}]]\n{body}".rstrip()
    return out.strip() + "\n"
