"""Building a student from a teacher through the ``students`` plugin family.

A student plugin registers a class that can be constructed without arguments, has an ``Options``
dataclass (fields declared with :func:`thinkfast.config.option`) and a method
``build(teacher: ThinkfastLM, options: Options) -> ThinkfastLM`` that works on any device and dtype
(the teacher's) and sets ``config.student`` to its registered name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from thinkfast.models.model import ThinkfastLM


def student_options(kind: str, options: dict[str, Any] | None = None, *, source: str = "") -> Any:
    """The validated ``Options`` instance of student plugin ``kind`` (defaults filled in).

    Raises :class:`~thinkfast.errors.RecipeError` naming every bad key, and
    :class:`~thinkfast.errors.PluginNotFoundError` for an unknown ``kind``.
    """
    from thinkfast.config.validate import from_dict
    from thinkfast.registry import get_registry

    cls = get_registry().get("students", kind)
    options_cls = getattr(cls, "Options", None)
    if options_cls is None or not dataclasses.is_dataclass(options_cls):
        return None
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return options
    return from_dict(options_cls, dict(options or {}), source=source, path="student.options")


def build_student(teacher: ThinkfastLM, kind: str, options: dict[str, Any] | None = None) -> ThinkfastLM:
    """Build the student ``kind`` (``llamba``, ``mambainllama``, ``transformer``...) from ``teacher``.

    ``options`` is the recipe's ``[student.options]`` table (or an ``Options`` instance).
    The teacher is left untouched; the student lives on its device, in its dtype, with its kernels.
    """
    from thinkfast.registry import get_registry

    cls = get_registry().get("students", kind)
    student = cls().build(teacher, student_options(kind, options))
    student.config.student = kind
    return student
