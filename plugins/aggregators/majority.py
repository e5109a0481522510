"""``majority``: the most frequent answer class (equivalent answers vote together)."""

from __future__ import annotations

import numpy as np

from thinkfast.evaluate.aggregation import Aggregator, weighted_vote
from thinkfast.evaluate.graded import GradedProblem


class Majority(Aggregator):
    """Majority vote over answer classes; samples without an answer abstain; ties broken at random."""

    def aggregate(self, problem: GradedProblem, subsets: np.ndarray, scores: np.ndarray | None,
                  rng: np.random.Generator) -> np.ndarray:
        classes = problem.classes[subsets]  # (S, k)
        return weighted_vote(classes, np.ones(classes.shape), problem.num_classes, rng)
