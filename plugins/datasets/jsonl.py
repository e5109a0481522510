"""``jsonl``: problems from local files (.jsonl, .json, .parquet) with a field mapping."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from thinkfast.config.common import DataSpec
from thinkfast.config.fields import option
from thinkfast.data.answers import ANSWER_FORMATS, INSTRUCTIONS, extract_answer, normalize_answer
from thinkfast.data.base import DatasetPlugin, Problem
from thinkfast.data.files import field, iter_records
from thinkfast.errors import DataError


@dataclass
class JsonlOptions:
    question_field: str = option("question", "Record field holding the question.")
    answer_field: str = option("answer", "Record field holding the reference final answer.")
    solution_field: str = option("", "Record field holding a worked solution; empty: records have none.")
    id_field: str = option("id", "Record field holding a problem id; records without it get '<split>-<index>'.")
    answer_format: str = option("plain", "How answers are written: 'gsm8k' (a number), 'math' (\\boxed{}) "
                                "or 'plain' (free text).", choices=ANSWER_FORMATS)
    answer_is_solution: bool = option(False, "The answer field holds a whole worked solution (like GSM8K's "
                                      "'... #### 72'): the final answer is extracted from it and the text is "
                                      "also the solution.")


class JsonlDataset(DatasetPlugin):
    """Local records mapped to problems by ``options.*_field``; needs ``data.path``."""

    Options = JsonlOptions

    def __init__(self, options: Any = None):
        super().__init__(options)
        self.answer_format = self.options.answer_format
        self.instruction = INSTRUCTIONS[self.answer_format]

    def read(self, spec: DataSpec) -> Iterator[Problem]:
        if not spec.path:
            raise DataError("the 'jsonl' dataset reads local files only: set data.path to a .jsonl, .json or "
                            ".parquet file (or a directory of them)")
        opts = self.options
        for index, (where, record) in enumerate(iter_records(spec.path, spec.split)):
            question = field(record, opts.question_field, where, "question_field")
            raw_answer = field(record, opts.answer_field, where, "answer_field")
            solution = field(record, opts.solution_field, where, "solution_field") if opts.solution_field else None
            if opts.answer_is_solution:
                answer = extract_answer(raw_answer, self.answer_format)
                if answer is None:
                    raise DataError(f"{where}: no final answer found in field {opts.answer_field!r} "
                                    f"(answer_format {self.answer_format!r})")
                if solution is None:
                    # the final-answer line is re-added by response_text in the dataset's format
                    body, marker, _ = raw_answer.rpartition("####")
                    solution = body.strip() if marker and self.answer_format == "gsm8k" else raw_answer
            else:
                answer = normalize_answer(raw_answer, self.answer_format)
            pid = record.get(opts.id_field)
            pid = str(pid) if pid not in (None, "") else f"{spec.split}-{index}"
            extra = {k: v for k, v in record.items()
                     if k not in {opts.question_field, opts.answer_field, opts.solution_field, opts.id_field}}
            yield Problem(pid, question, answer, solution, extra)
