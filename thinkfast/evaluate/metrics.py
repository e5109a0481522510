"""Coverage (pass@k) and aggregator accuracy@k, with bootstrap confidence intervals over problems.

- Coverage: the unbiased pass@k estimator ``1 - C(n-c, k) / C(n, k)`` per problem (``n`` samples,
  ``c`` correct), averaged over problems.
- Accuracy@k of an aggregator: for each problem, the fraction of ``subsets`` random k-subsets of
  its ``n`` samples (drawn without replacement; when there are at most ``subsets`` k-subsets, all of
  them, each repeated ``subsets // C(n, k)`` times so that random tie-breaking averages out) on which
  the aggregator picks a correct answer, averaged over problems.
- Confidence intervals: percentile bootstrap over problems (resampled with replacement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from thinkfast.evaluate.aggregation import aggregate_subsets
from thinkfast.evaluate.graded import GradedProblem


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: the probability that a random k-subset of n samples (c correct) holds a correct one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): numerically stable form of 1 - C(n-c,k)/C(n,k)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to n, with n itself always last."""
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    return ks if ks and ks[-1] == n else [*ks, n]


@dataclass
class Estimate:
    """A mean over problems with a percentile-bootstrap confidence interval (None, None: no interval)."""

    mean: float
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


def bootstrap(values: np.ndarray, resamples: int, confidence: float, rng: np.random.Generator) -> Estimate:
    """Mean of per-problem ``values (P,)`` and its bootstrap interval (``resamples`` 0 or no values: none)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if values.size else float("nan")
    if resamples == 0 or values.size == 0:
        return Estimate(mean, None, None)
    idx = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    return Estimate(mean, float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def random_subsets(n: int, k: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(S, k)`` sample indices: ``count`` random k-subsets, or, when there are at most ``count`` k-subsets,
    every one of them, each repeated ``count // C(n, k)`` times.

    The repeats matter to aggregators that break ties at random: each copy is decided anew, so that a tie counts
    as the chance it is won instead of as one coin flip (at k = n there is a single subset).
    """
    total = math.comb(n, k)
    if total <= count:
        every = np.array(list(combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
        return np.tile(every, (count // total, 1))
    return np.argsort(rng.random((count, n)), axis=1)[:, :k]


def coverage_per_problem(problems: list[GradedProblem], k: int) -> np.ndarray:
    """``(P,)`` pass@k of each problem."""
    return np.array([pass_at_k(p.n, int(p.correct.sum()), k) for p in problems])


def accuracy_per_problem(problems: list[GradedProblem], aggregator: Any, scores: list[np.ndarray] | None,
                         k: int, subsets: int, seed: int) -> np.ndarray:
    """``(P,)`` fraction of random k-subsets on which ``aggregator`` picks a correct answer.

    Subsets and tie-breaking draw from a generator seeded by ``(seed, k, problem index)``, so
    results do not depend on the order aggregators or models are evaluated in.
    """
    out = np.empty(len(problems))
    for i, problem in enumerate(problems):
        rng = np.random.default_rng([seed, k, i])
        rows = random_subsets(problem.n, k, subsets, rng)
        chosen = aggregate_subsets(aggregator, problem, rows, None if scores is None else scores[i], rng)
        out[i] = problem.is_correct(chosen).mean()
    return out
