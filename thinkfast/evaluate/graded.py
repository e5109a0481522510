"""What grading produces and aggregators consume: one :class:`GradedProblem` per problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class GradedProblem:
    """One problem's ``n`` samples after grading.

    Answers that the grader finds equivalent share an *answer class* (``0 .. C-1``); a sample
    without an extractable answer is in class ``-1`` and never correct. Arrays are indexed by
    sample (``sample_index`` order) or by class:

    - ``texts``: ``n`` sample texts; ``answers``: ``n`` extracted answers (None: none found)
    - ``classes``: ``(n,)`` int64 answer class of each sample, ``-1`` for no answer
    - ``correct``: ``(n,)`` bool, sample's answer equivalent to the reference
    - ``class_answers``: ``C`` representative answer strings (the most frequent spelling)
    - ``class_correct``: ``(C,)`` bool, class equivalent to the reference
    - ``num_tokens``: ``(n,)`` int64 generated tokens per sample
    - ``dataset_options``: the options ``generate`` created the dataset plugin with (``run.json``), to
      create it the same way (``{}``: its defaults)
    """

    problem_id: str
    dataset: str
    reference: str
    question: str
    texts: list[str]
    answers: list[str | None]
    classes: np.ndarray
    correct: np.ndarray
    class_answers: list[str]
    class_correct: np.ndarray
    num_tokens: np.ndarray
    dataset_options: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        """Number of distinct (non-equivalent) answers."""
        return len(self.class_answers)

    def is_correct(self, chosen: np.ndarray) -> np.ndarray:
        """``(S,)`` bool: whether each chosen class id (``-1``: no answer) is a correct answer."""
        chosen = np.asarray(chosen, dtype=np.int64)
        padded = np.append(self.class_correct.astype(bool), False)  # index -1 -> the appended False
        return padded[chosen]
