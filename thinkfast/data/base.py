"""The dataset-plugin contract: :class:`Problem` records and the :class:`DatasetPlugin` base class.

A dataset plugin is a :class:`DatasetPlugin` subclass registered under a name in the
``datasets`` family. It turns a :class:`~thinkfast.config.common.DataSpec` (path, split,
offset, limit, plugin options) into a list of :class:`Problem` records and knows how answers
to its problems are written (``answer_format``), how to pull a final answer out of a model's
text (:meth:`DatasetPlugin.extract_answer`) and, optionally, how to verify one
(:meth:`DatasetPlugin.check`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from thinkfast.data import answers
from thinkfast.errors import DataError

if TYPE_CHECKING:
    from thinkfast.config.common import DataSpec

ANSWER_FORMATS = answers.ANSWER_FORMATS


@dataclass
class Problem:
    """One problem.

    ``id`` is stable across runs (it does not depend on ``offset``/``limit``): generated samples
    and teacher responses are joined to problems by it. ``answer`` is the reference final answer
    as a string, normalised for its dataset's answer format. ``solution`` is a worked chain of
    thought (without the final-answer line for GSM8K-style data) or None when the source has none.
    """

    id: str
    question: str
    answer: str
    solution: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class NoOptions:
    """A plugin without options."""


class DatasetPlugin:
    """Base class of dataset plugins.

    Subclasses set ``Options`` (a dataclass of ``thinkfast.config.option`` fields; the recipe
    validator checks ``[... .data.options]`` against it), ``answer_format`` and
    ``instruction``, and implement :meth:`read`. :meth:`load` applies ``offset`` and
    ``limit`` lazily, so a generator-backed :meth:`read` only produces what is used.
    """

    Options: ClassVar[type] = NoOptions
    #: How reference answers and model answers are written: "gsm8k", "math" or "plain".
    answer_format: ClassVar[str] = "plain"
    #: Appended to every question: tells the model how to mark its final answer.
    instruction: ClassVar[str] = answers.INSTRUCTIONS["plain"]

    def __init__(self, options: Any = None):
        """``options``: an ``Options`` instance, a dict of its fields (as a recipe gives it) or None."""
        if options is None:
            options = {}
        if isinstance(options, dict):
            from thinkfast.config.validate import from_dict

            options = from_dict(self.Options, options, path="data.options")
        self.options = options

    # --- reading -----------------------------------------------------------------------------
    def read(self, spec: DataSpec) -> Iterable[Problem]:
        """Every problem of ``spec.split`` (from ``spec.path`` when set), in a fixed order."""
        raise NotImplementedError

    def load(self, spec: DataSpec) -> list[Problem]:
        """Problems ``offset .. offset + limit`` (``limit`` 0: to the end) of ``read(spec)``."""
        return list(self.iter_problems(spec))

    def iter_problems(self, spec: DataSpec) -> Iterator[Problem]:
        """Like :meth:`load` but lazy."""
        stop = spec.offset + spec.limit if spec.limit else None
        return itertools.islice(iter(self.read(spec)), spec.offset, stop)

    # --- answers -----------------------------------------------------------------------------
    def extract_answer(self, text: str) -> str | None:
        """The final answer written in a model's ``text``, normalised; None if there is none."""
        return answers.extract_answer(text, self.answer_format)

    def check(self, problem: Problem, text: str) -> bool | None:
        """Programmatic verdict on ``text`` as an answer to ``problem``; None: no verifier here.

        The default verifies numeric answer formats ("gsm8k") by exact numeric equality and
        leaves the others (MATH expressions, free text) to the grader.
        """
        if self.answer_format != "gsm8k":
            return None
        return answers.answers_equal(self.extract_answer(text), problem.answer, self.answer_format)

    def response_text(self, problem: Problem) -> str | None:
        """The reference worked solution in the form :attr:`instruction` asks for, or None."""
        return answers.format_response(problem.solution, problem.answer, self.answer_format)

    # --- rendering ---------------------------------------------------------------------------
    def prompt(self, problem: Problem, tokenizer: Any, template: str = "auto",
               few_shot: Iterable[Problem] = (), instruction: str = "") -> str:
        """The generation prompt for ``problem`` (see :func:`thinkfast.data.render.prompt_text`)."""
        from thinkfast.data.render import prompt_text

        return prompt_text(problem, tokenizer, template, list(few_shot), instruction or self.instruction,
                           answer_format=self.answer_format)

    def few_shot_problems(self, spec: DataSpec) -> list[Problem]:
        """``spec.few_shot`` worked examples: the first problems with a solution in the train split.

        They come from the same source (``spec.path`` if set). A problem whose question is one that
        ``spec`` selects is skipped, so a problem is never shown its own solution: neither when
        ``spec.split`` is "train" itself nor when ``spec.path`` names one file, which is read whatever
        the split. Fewer examples than asked is a :class:`DataError`.
        """
        if spec.few_shot == 0:
            return []
        train = dataclasses.replace(spec, split="train", offset=0, limit=0)
        try:
            asked = {p.question for p in self.iter_problems(spec)}
            shots = list(itertools.islice((p for p in self.read(train) if p.solution and p.question not in asked),
                                          spec.few_shot))
        except DataError as err:
            raise DataError(f"data.few_shot = {spec.few_shot} takes worked examples from the 'train' split, "
                            f"which could not be read: {err}") from None
        if len(shots) < spec.few_shot:
            one_file = bool(spec.path) and Path(spec.path).expanduser().is_file()
            source = f"{spec.path} (one file, read whatever the split)" if one_file else "the 'train' split"
            raise DataError(f"data.few_shot = {spec.few_shot}: {source} has only {len(shots)} problem(s) with a "
                            f"solution that are not among the problems asked; lower data.few_shot or data.limit, "
                            f"or point data.path at a directory that holds a train file")
        return shots
