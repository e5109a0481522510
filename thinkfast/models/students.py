"""Building a student from a teacher through the ``students`` plugin family.

A student plugin registers a class that can be constructed without arguments, has an ``Options``
dataclass (fields declared with :func:`thinkfast.config.option`) and a method
``build(teacher: ThinkfastLM, options: Options) -> ThinkfastLM`` that works on any device and dtype
(the teacher's) and sets ``config.student`` to its registered name.

:func:`build_student` guards the calls (:mod:`thinkfast.plugin_guard`): an exception from the plugin's code,
or a result that is not a :class:`ThinkfastLM` over the teacher's vocabulary, is one
:class:`~thinkfast.plugin_guard.PluginError` naming the student plugin and its package.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from thinkfast.models.model import ThinkfastLM
from thinkfast.plugin_guard import calling, describe, plugin_error

if TYPE_CHECKING:
    from thinkfast.registry import PluginEntry


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

    entry = get_registry().entry("students", kind)
    opts = student_options(kind, options)
    with calling(entry, "creating it"):
        builder = entry.component()
    with calling(entry, "build()"):
        student = builder.build(teacher, opts)
    _check_student(entry, student, teacher)
    student.config.student = kind
    return student


def _check_student(entry: PluginEntry, student: Any, teacher: ThinkfastLM) -> None:
    """What the core relies on: a :class:`ThinkfastLM` over the teacher's vocabulary (the distillation losses
    compare the two models' logits token by token)."""
    if not isinstance(student, ThinkfastLM):
        raise plugin_error(entry, f"build() returned {describe(student)}; it must return a "
                                  f"thinkfast.models.ThinkfastLM built from the teacher")
    if student.config.vocab_size != teacher.config.vocab_size:
        raise plugin_error(entry, f"build() returned a model with a vocabulary of {student.config.vocab_size} "
                                  f"tokens; the teacher's has {teacher.config.vocab_size}, and a student must "
                                  f"keep it")
