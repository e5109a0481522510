r"""``math500`` and ``math``: competition mathematics (Hendrycks MATH), answers in ``\boxed{}``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from thinkfast.config.common import DataSpec
from thinkfast.config.fields import option
from thinkfast.data.answers import INSTRUCTIONS, extract_boxed, normalize_math
from thinkfast.data.base import Problem
from thinkfast.data.files import field
from thinkfast.data.sources import HubOptions, RecordDatasetPlugin, hub_records
from thinkfast.errors import DataError

SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus")


def _level(record: dict[str, Any]) -> int | None:
    """The difficulty level 1-5 from ``"Level 3"`` or ``3``; None when absent or unparseable."""
    raw = str(record.get("level", "")).replace("Level", "").strip()
    return int(raw) if raw.isdigit() else None


def boxed_answer(solution: str, where: str) -> str:
    """The normalised content of the solution's last ``\\boxed{}``; :class:`DataError` if it has none."""
    boxed = extract_boxed(solution)
    if boxed is None:
        raise DataError(f"{where}: the solution has no \\boxed{{...}} final answer; give the answer in an "
                        f"'answer' field or use the 'jsonl' dataset with answer_field")
    return normalize_math(boxed)


@dataclass
class Math500Options(HubOptions):
    hub_id: str = option("HuggingFaceH4/MATH-500", "Hugging Face hub dataset id, used when data.path is empty.")


class Math500(RecordDatasetPlugin):
    """MATH-500: records ``{"problem", "solution", "answer", "subject", "level", "unique_id"}``; one split, test."""

    Options = Math500Options
    answer_format = "math"
    instruction = INSTRUCTIONS["math"]
    id_prefix = "math500"

    def records(self, spec: DataSpec) -> Iterator[tuple[str, dict[str, Any]]]:
        if not spec.path and spec.split != "test":
            raise DataError(f"math500 has only the 'test' split, not {spec.split!r}; set data.split = 'test'")
        return super().records(spec)

    def to_problem(self, record: dict[str, Any], index: int, where: str, spec: DataSpec) -> Problem:
        question = field(record, "problem", where)
        solution = record.get("solution") or None
        answer = record.get("answer")
        if answer is None or not str(answer).strip():
            answer = boxed_answer(field(record, "solution", where), where)
        metadata = {k: record[k] for k in ("subject", "level", "unique_id") if k in record}
        pid = str(record.get("unique_id") or self.problem_id(spec, index))
        return Problem(pid, question, normalize_math(str(answer)), solution, metadata)


@dataclass
class MathOptions(HubOptions):
    hub_id: str = option("EleutherAI/hendrycks_math", "Hugging Face hub dataset id, used when data.path is empty.")
    subjects: list[str] = option(list(SUBJECTS), "Subjects to read (hub configurations), in this order: "
                                 f"{', '.join(SUBJECTS)}.")
    levels: list[int] = option([], "Keep only these difficulty levels (1-5); empty keeps all.")

    def check(self) -> list[tuple[str, str]]:
        problems = [("subjects", f"{s!r} is not a MATH subject ({', '.join(SUBJECTS)})")
                    for s in self.subjects if s not in SUBJECTS]
        problems += [("levels", f"{lv} is not a level 1-5") for lv in self.levels if not 1 <= lv <= 5]
        if not self.subjects:
            problems.append(("subjects", "empty: list at least one subject"))
        return problems


class MathDataset(RecordDatasetPlugin):
    """Hendrycks MATH: records ``{"problem", "solution", "level", "type"}``; the answer is the last boxed."""

    Options = MathOptions
    answer_format = "math"
    instruction = INSTRUCTIONS["math"]
    id_prefix = "math"

    def records(self, spec: DataSpec) -> Iterator[tuple[str, dict[str, Any]]]:
        if spec.path:
            return super().records(spec)
        opts = self.options
        return itertools.chain.from_iterable(
            hub_records(opts.hub_id, subject, spec.split, opts.revision, opts.streaming) for subject in opts.subjects
        )

    def read(self, spec: DataSpec) -> Iterator[Problem]:
        for problem in super().read(spec):
            if not self.options.levels or problem.metadata.get("level") in self.options.levels:
                yield problem

    def to_problem(self, record: dict[str, Any], index: int, where: str, spec: DataSpec) -> Problem:
        question = field(record, "problem", where)
        solution = field(record, "solution", where)
        metadata = {"subject": record.get("type") or record.get("subject"), "level": _level(record)}
        return Problem(self.problem_id(spec, index), question, boxed_answer(solution, where), solution, metadata)
