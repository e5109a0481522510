"""JSON that strict parsers read: no ``NaN`` or ``Infinity`` (Python's ``json`` writes them by default, and
``jq``, JavaScript's ``JSON.parse`` or Go's ``encoding/json`` then reject the whole file).

A float that is not finite has no JSON number; it is written as ``null``, which the reports already use for
"no value" (an interval without bootstrap, a metric of a cell that was not measured).
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float (also inside dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` of :func:`finite_or_null` (``value``), refusing anything that would not be strict JSON."""
    return json.dumps(finite_or_null(value), allow_nan=False, **options)
