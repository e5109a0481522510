"""``openmathinstruct2``: NVIDIA OpenMathInstruct-2 (14M synthetic solutions to GSM8K/MATH-like problems)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thinkfast.config.common import DataSpec
from thinkfast.config.fields import option
from thinkfast.data.answers import INSTRUCTIONS, normalize_math
from thinkfast.data.base import Problem
from thinkfast.data.files import field
from thinkfast.data.sources import HubOptions, RecordDatasetPlugin


@dataclass
class OpenMathInstruct2Options(HubOptions):
    hub_id: str = option("nvidia/OpenMathInstruct-2", "Hugging Face hub dataset id, used when data.path is empty.")
    streaming: bool = option(True, "Stream the hub dataset (it has 14M rows) instead of downloading it all first.")
    sources: list[str] = option([], "Keep only rows whose problem_source is listed (e.g. 'augmented_gsm8k', "
                                "'math'); empty keeps all.")


class OpenMathInstruct2(RecordDatasetPlugin):
    """Records ``{"problem", "generated_solution", "expected_answer", "problem_source"}``.

    Hub splits: ``train`` (14M), ``train_1M``, ``train_2M``, ``train_5M``. Solutions box their answers.
    """

    Options = OpenMathInstruct2Options
    answer_format = "math"
    instruction = INSTRUCTIONS["math"]
    id_prefix = "omi2"

    def read(self, spec: DataSpec):
        for problem in super().read(spec):
            if not self.options.sources or problem.metadata.get("source") in self.options.sources:
                yield problem

    def to_problem(self, record: dict[str, Any], index: int, where: str, spec: DataSpec) -> Problem:
        return Problem(
            self.problem_id(spec, index),
            field(record, "problem", where),
            normalize_math(field(record, "expected_answer", where)),
            field(record, "generated_solution", where),
            {"source": record.get("problem_source")},
        )
