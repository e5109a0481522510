"""Calling a dataset plugin with its results checked: a plugin's bug is one message, not a traceback.

:func:`thinkfast.data.get_plugin` hands the subcommands a :class:`GuardedDataset`, never the plugin itself.
Every call the core makes into the plugin goes through it: creating it, reading problems (``load``,
``iter_problems``, ``few_shot_problems``), writing a reference response (``response_text``) and extracting
a model's answer (``extract_answer``). An exception that comes from the plugin's code, or a result the
contract does not allow (an item that is not a :class:`~thinkfast.data.base.Problem`, a problem whose id,
question or answer is not a string, an answer that is not a string or None, an unknown ``answer_format``)
stops the command with a :class:`~thinkfast.plugin_guard.PluginError` naming the dataset, its package, what
it did and, for an exception, the line of its code. So do a problem with an empty id and two problems with one
id (for a built-in plugin, whose ids come from the records it reads, that is a
:class:`~thinkfast.errors.DataError` about the data). A :class:`~thinkfast.errors.DataError` the plugin raises
(a bad line of a data file) reaches the user unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thinkfast.data.answers import ANSWER_FORMATS
from thinkfast.data.base import DatasetPlugin, Problem
from thinkfast.errors import DataError
from thinkfast.plugin_guard import PluginError, calling, checked_iter, describe, plugin_error

if TYPE_CHECKING:
    from thinkfast.config.common import DataSpec
    from thinkfast.registry import PluginEntry

#: The fields of a problem that must be strings, and ``solution``, which may also be None.
_TEXT_FIELDS = ("id", "question", "answer")


@dataclass
class GuardedDataset:
    """A dataset plugin instance plus the registry entry it came from."""

    entry: PluginEntry
    inner: Any

    @classmethod
    def create(cls, entry: PluginEntry, options: Any = None) -> GuardedDataset:
        """Instantiate ``entry``'s component with ``options`` and check the attributes the core reads."""
        guard = cls(entry, None)
        if not (isinstance(entry.component, type) and issubclass(entry.component, DatasetPlugin)):
            raise guard.error(f"registers {describe(entry.component)}, not a subclass of "
                              f"thinkfast.data.DatasetPlugin")
        if entry.component.read is DatasetPlugin.read:
            raise guard.error("does not implement read(spec), which yields every problem of spec.split")
        with calling(entry, "creating it"):
            guard.inner = entry.component(options)
        answer_format = getattr(guard.inner, "answer_format", None)
        if answer_format not in ANSWER_FORMATS:
            raise guard.error(f"has answer_format {describe(answer_format)}; it must be one of "
                              f"{', '.join(map(repr, ANSWER_FORMATS))}")
        if not isinstance(getattr(guard.inner, "instruction", None), str):
            raise guard.error(f"has instruction {describe(getattr(guard.inner, 'instruction', None))}; it must be "
                              f"the text appended to every question")
        return guard

    @property
    def answer_format(self) -> str:
        return self.inner.answer_format

    @property
    def instruction(self) -> str:
        return self.inner.instruction

    @property
    def options(self) -> Any:
        return self.inner.options

    # --- problems ------------------------------------------------------------------------------
    def load(self, spec: DataSpec) -> list[Problem]:
        """The problems ``spec`` selects (the plugin's own ``load`` if it has one), each checked, their ids
        unique."""
        if not self.overrides("load"):
            return self._unique_ids(list(self.iter_problems(spec)), spec, "read()")
        with calling(self.entry, "load()"):
            problems = self.inner.load(spec)
        if not isinstance(problems, list):
            raise self.error(f"load() returned {describe(problems)}; it must return a list of problems")
        return self._unique_ids([self._checked_problem(p, f"item {spec.offset + i} of split {spec.split!r}",
                                                       "load() returned") for i, p in enumerate(problems)],
                                spec, "load()")

    def _unique_ids(self, problems: list[Problem], spec: DataSpec, method: str) -> list[Problem]:
        """``problems`` if no two share an id: samples, grades and training responses are joined to their
        problem by it, so a repeated id would merge two problems' samples (and ``evaluate`` then stop)."""
        from thinkfast.registry import BUILTIN_DISTRIBUTION

        first: dict[str, int] = {}
        for index, problem in enumerate(problems):
            earlier = first.setdefault(problem.id, index)
            if earlier == index:
                continue
            items = f"items {spec.offset + earlier} and {spec.offset + index} of split {spec.split!r}"
            if self.entry.package == BUILTIN_DISTRIBUTION:  # a built-in takes ids from the records it reads
                raise DataError(f"dataset {self.entry.name!r}: two problems have the id {problem.id!r} ({items} of "
                                f"{spec.path or 'its source'}); give every record a unique id")
            raise self.error(f"{method} gave two problems the id {problem.id!r} ({items}); each problem needs an id "
                             f"of its own (samples, grades and responses are joined to problems by id)")
        return problems

    def iter_problems(self, spec: DataSpec) -> Iterator[Problem]:
        """Problems ``offset .. offset + limit`` of the plugin's ``read(spec)`` (or what its own
        ``iter_problems`` yields), each checked as it comes."""
        method = "iter_problems()" if self.overrides("iter_problems") else "read()"
        with calling(self.entry, method):
            items = self.inner.iter_problems(spec) if self.overrides("iter_problems") else self.inner.read(spec)
        items = checked_iter(self.entry, items, f"{method} of split {spec.split!r}")
        if method == "read()":
            items = itertools.islice(items, spec.offset, spec.offset + spec.limit if spec.limit else None)
        for index, item in enumerate(items, start=spec.offset):  # an own iter_problems starts at the offset too
            yield self._checked_problem(item, f"item {index} of split {spec.split!r}", f"{method[:-2]}() yielded")

    def few_shot_problems(self, spec: DataSpec) -> list[Problem]:
        """The plugin's worked examples for ``spec`` (``spec.few_shot`` of them), checked."""
        with calling(self.entry, "few_shot_problems()"):
            shots = self.inner.few_shot_problems(spec)
        if not isinstance(shots, list):
            raise self.error(f"few_shot_problems() returned {describe(shots)}; it must return a list of problems")
        return [self._checked_problem(p, f"few-shot example {i}", "few_shot_problems() returned")
                for i, p in enumerate(shots)]

    def _checked_problem(self, item: Any, where: str, did: str = "read() yielded") -> Problem:
        if not isinstance(item, Problem):
            raise self.error(f"{did} {describe(item)} as {where}; a problem is a "
                             f"thinkfast.data.Problem(id, question, answer, solution)")
        for name in _TEXT_FIELDS:
            value = getattr(item, name)
            if not isinstance(value, str):
                raise self.error(f"{did} a problem whose {name} is {describe(value)} ({where}); id, question and "
                                 f"answer must be strings")
        if not item.id.strip():
            raise self.error(f"{did} a problem whose id is {item.id!r} ({where}); each problem needs a non-empty id "
                             f"of its own")
        if item.solution is not None and not isinstance(item.solution, str):
            raise self.error(f"{did} problem {item.id!r} whose solution is {describe(item.solution)}; it must be "
                             f"a string or None")
        return item

    # --- answers -------------------------------------------------------------------------------
    def extract_answer(self, text: str) -> str | None:
        """The plugin's answer in ``text``: a string or None."""
        with calling(self.entry, "extract_answer()"):
            answer = self.inner.extract_answer(text)
        if answer is not None and not isinstance(answer, str):
            raise self.error(f"extract_answer() returned {describe(answer)}; it must return the answer as a "
                             f"string, or None when the text has none")
        return answer

    def response_text(self, problem: Problem) -> str | None:
        """The plugin's reference response to ``problem``: a string or None."""
        with calling(self.entry, "response_text()"):
            text = self.inner.response_text(problem)
        if text is not None and not isinstance(text, str):
            raise self.error(f"response_text() returned {describe(text)} for problem {problem.id!r}; it must "
                             f"return the worked solution as a string, or None when there is none")
        return text

    def check(self, problem: Problem, text: str) -> bool | None:
        """The plugin's verdict on ``text`` as an answer to ``problem``: True, False or None (no verifier)."""
        with calling(self.entry, "check()"):
            verdict = self.inner.check(problem, text)
        if verdict is not None and not isinstance(verdict, bool):
            raise self.error(f"check() returned {describe(verdict)} for problem {problem.id!r}; it must return "
                             f"True, False or None")
        return verdict

    def prompt(self, problem: Problem, tokenizer: Any, template: str = "auto", few_shot: Any = (),
               instruction: str = "") -> str:
        """The plugin's generation prompt for ``problem`` (see :meth:`DatasetPlugin.prompt`)."""
        with calling(self.entry, "prompt()"):
            text = self.inner.prompt(problem, tokenizer, template, few_shot, instruction)
        if not isinstance(text, str):
            raise self.error(f"prompt() returned {describe(text)}; it must return the prompt text")
        return text

    def overrides(self, method: str) -> bool:
        """Whether the plugin's class has its own ``method`` (not :class:`DatasetPlugin`'s)."""
        return getattr(type(self.inner), method) is not getattr(DatasetPlugin, method)

    def error(self, what: str) -> PluginError:
        return plugin_error(self.entry, what)
