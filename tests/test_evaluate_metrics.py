"""pass@k, k grids, subsets, bootstrap and voting helpers."""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from thinkfast.evaluate.aggregation import best_of_n, weighted_vote
from thinkfast.evaluate.graded import GradedProblem
from thinkfast.evaluate.metrics import accuracy_per_problem, bootstrap, k_values, pass_at_k, random_subsets
from thinkfast.registry import get_registry


def _by_definition(n: int, c: int, k: int) -> float:
    return 1 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 2, 1 - 3 / 10),        # C(3,2)/C(5,2) = 3/10
    (4, 1, 1, 0.25),
    (4, 1, 2, 0.5),               # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (10, 3, 3, 1 - 35 / 120),     # C(7,3) = 35, C(10,3) = 120
    (8, 0, 1, 0.0),               # c = 0: never
    (8, 0, 8, 0.0),
    (8, 8, 1, 1.0),               # c = n: always
    (6, 1, 6, 1.0),               # k = n: any correct sample is drawn
    (6, 2, 5, 1.0),               # n - c < k
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(_by_definition(n, c, k), abs=1e-12)


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_k_values_are_powers_of_two_then_n():
    assert k_values(1) == [1]
    assert k_values(8) == [1, 2, 4, 8]
    assert k_values(12) == [1, 2, 4, 8, 12]


def test_random_subsets_are_distinct_indices_and_enumerate_small_cases():
    rng = np.random.default_rng(0)
    rows = random_subsets(16, 4, 50, rng)
    assert rows.shape == (50, 4)
    assert all(len(set(r)) == 4 and r.min() >= 0 and r.max() < 16 for r in rows)
    assert len({tuple(sorted(r)) for r in rows}) > 40  # random, not the first k repeated
    every = random_subsets(5, 2, 50, rng)
    assert every.shape == (50, 2)  # C(5, 2) = 10 <= 50: all of them, each 5 times
    assert Counter(map(tuple, every.tolist())) == {pair: 5 for pair in combinations(range(5), 2)}
    assert random_subsets(5, 2, 25, rng).shape == (20, 2)  # each twice: every subset weighs the same
    assert random_subsets(6, 6, 100, rng).tolist() == [list(range(6))] * 100


def test_a_tie_at_k_equal_n_counts_as_the_chance_it_is_won_not_one_coin_flip():
    """Two right and two wrong samples: majority@4 picks the right answer half the time. With one subset (all
    four samples) drawn once, the tie was broken once, so the problem scored 0 or 1 by the seed alone."""
    problem = GradedProblem(problem_id="p", dataset="gsm8k", reference="1", question="", texts=["a"] * 4,
                            answers=["1", "1", "2", "2"], classes=np.array([0, 0, 1, 1]),
                            correct=np.array([True, True, False, False]), class_answers=["1", "2"],
                            class_correct=np.array([True, False]), num_tokens=np.ones(4, dtype=np.int64))
    majority = get_registry().get("aggregators", "majority")()
    for seed in range(5):
        accuracy = accuracy_per_problem([problem], majority, None, k=4, subsets=100, seed=seed)[0]
        assert 0.35 < accuracy < 0.65, (seed, accuracy)


def test_bootstrap_interval_contains_mean_and_shrinks_with_more_problems():
    rng = np.random.default_rng(0)
    small = bootstrap(np.array([0, 1] * 10, dtype=float), 500, 0.95, rng)
    large = bootstrap(np.array([0, 1] * 500, dtype=float), 500, 0.95, rng)
    assert small.low < 0.5 < small.high and small.mean == 0.5
    assert large.high - large.low < small.high - small.low
    none = bootstrap(np.array([1.0, 0.0]), 0, 0.95, rng)
    assert none.mean == 0.5 and none.low is None and none.high is None


def test_weighted_vote_ignores_no_answer_and_breaks_ties_at_random():
    rng = np.random.default_rng(0)
    classes = np.array([[0, 1, 1, -1], [-1, -1, -1, -1], [2, 2, 0, -1]])
    ones = np.ones(classes.shape)
    assert weighted_vote(classes, ones, 3, rng).tolist() == [1, -1, 2]
    weights = np.array([[5.0, 1.0, 1.0, 9.0], [1, 1, 1, 1], [0.1, 0.1, 0.5, 0]])
    assert weighted_vote(classes, weights, 3, rng).tolist() == [0, -1, 0]
    tie = np.array([[0, 1]] * 400)
    picks = weighted_vote(tie, np.ones(tie.shape), 2, rng)
    assert 120 < (picks == 0).sum() < 280  # both classes win about half of the ties


def test_best_of_n_takes_the_best_scored_sample_with_an_answer():
    rng = np.random.default_rng(0)
    classes = np.array([[0, 1, -1], [1, 0, 2]])
    scores = np.array([[0.2, 0.7, 0.9], [0.1, 0.2, 0.3]])
    assert best_of_n(classes, scores, rng).tolist() == [1, 2]
