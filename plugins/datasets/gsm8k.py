"""``gsm8k``: grade-school math word problems (hub ``openai/gsm8k``, config ``main``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from thinkfast.config.common import DataSpec
from thinkfast.config.fields import option
from thinkfast.data.answers import INSTRUCTIONS, normalize_number
from thinkfast.data.base import Problem
from thinkfast.data.files import field
from thinkfast.data.sources import HubOptions, RecordDatasetPlugin
from thinkfast.errors import DataError

_CALCULATOR = re.compile(r"<<[^>]*>>")


def split_gsm8k_answer(text: str, where: str) -> tuple[str, str]:
    """``(solution, answer)`` from a GSM8K answer field ``"...worked steps...\\n#### 72"``.

    The solution loses its ``<<48/2=24>>`` calculator annotations; the answer is normalised.
    """
    if "####" not in text:
        raise DataError(f"{where}: the answer field has no '#### <number>' line; is this GSM8K-formatted data? "
                        f"For other files use the 'jsonl' dataset with a field mapping")
    body, _, final = text.rpartition("####")
    answer = normalize_number(final)
    if answer is None:
        raise DataError(f"{where}: the text after '####' is not a number: {final.strip()!r}")
    return _CALCULATOR.sub("", body).strip(), answer


@dataclass
class GSM8KOptions(HubOptions):
    hub_id: str = option("openai/gsm8k", "Hugging Face hub dataset id, used when data.path is empty.")
    hub_config: str = option("main", "Hub dataset configuration: 'main' or 'socratic'.")


class GSM8K(RecordDatasetPlugin):
    """GSM8K: records ``{"question", "answer"}`` where ``answer`` ends with ``#### N``."""

    Options = GSM8KOptions
    answer_format = "gsm8k"
    instruction = INSTRUCTIONS["gsm8k"]
    id_prefix = "gsm8k"

    def to_problem(self, record: dict[str, Any], index: int, where: str, spec: DataSpec) -> Problem:
        question = field(record, "question", where)
        solution, answer = split_gsm8k_answer(field(record, "answer", where), where)
        return Problem(self.problem_id(spec, index), question, answer, solution)
