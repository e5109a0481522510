"""The aggregator contract and the voting helpers built-in aggregators share.

An aggregator picks one answer class for a problem from a subset of its samples. It is a class
registered in the ``aggregators`` plugin family with:

- ``Options``: a dataclass of :func:`thinkfast.config.option` fields (optional);
- ``__init__(self, options)``: ``options`` is an ``Options`` instance (or a dict of its fields);
- ``prepare(self)`` (optional): load what ``score`` needs (a scoring model). The engine calls it
  before each ``score`` call, untimed, so it must load once and return at once afterwards: loading
  is a one-off cost, not one of scoring each sample;
- ``score(self, problems) -> list[np.ndarray] | None`` (optional): one ``(n,)`` float array of
  per-sample scores per problem, computed once over all samples. The engine measures the wall
  seconds this call takes and charges them, per sample, to the time budget;
- ``choose(self, problem, indices, scores, rng) -> int``: the chosen answer class for the samples
  ``indices`` (``(k,)`` int), ``-1`` for none; ``scores`` is that problem's ``(n,)`` array or None;
- ``needs_question`` (optional, default False): True if ``score`` reads ``problem.question``;
- or, instead of ``choose``, a vectorised ``aggregate(self, problem, subsets, scores, rng)``
  taking ``subsets (S, k)`` and returning ``(S,)`` class ids.

:class:`Aggregator` provides every default; subclassing it is convenient, not required.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from thinkfast.evaluate.graded import GradedProblem


@dataclass
class NoOptions:
    """An aggregator without options."""


class Aggregator:
    """Base class with the defaults of the aggregator contract (see the module docstring)."""

    Options: ClassVar[type] = NoOptions
    #: Whether :meth:`score` reads the problem statement (``question`` in ``samples.jsonl``).
    needs_question: ClassVar[bool] = False

    def __init__(self, options: Any = None):
        if options is None or isinstance(options, dict):
            from thinkfast.config.validate import from_dict

            options = from_dict(self.Options, options or {}, path="options")
        self.options = options

    def prepare(self) -> None:
        """Load what :meth:`score` needs, once (outside the time budget); nothing by default."""

    def score(self, problems: list[GradedProblem]) -> list[np.ndarray] | None:
        """Per-sample scores, one ``(n,)`` array per problem; None when the aggregator needs none."""
        return None

    def choose(self, problem: GradedProblem, indices: np.ndarray, scores: np.ndarray | None,
               rng: np.random.Generator) -> int:
        """The answer class chosen from samples ``indices`` (``(k,)``); ``-1`` for none."""
        raise NotImplementedError

    def aggregate(self, problem: GradedProblem, subsets: np.ndarray, scores: np.ndarray | None,
                  rng: np.random.Generator) -> np.ndarray:
        """``(S,)`` chosen classes for ``subsets (S, k)`` of sample indices; loops over :meth:`choose`."""
        return choose_each(self, problem, subsets, scores, rng)


def choose_each(aggregator: Any, problem: GradedProblem, subsets: np.ndarray, scores: np.ndarray | None,
                rng: np.random.Generator) -> np.ndarray:
    """``aggregator.choose`` for each row of ``subsets``, as an array of what it returned (int64 for ints).

    Nothing is converted, so that :mod:`thinkfast.evaluate.guard` sees a float or a string as what it is.
    """
    chosen = [aggregator.choose(problem, row, scores, rng) for row in subsets]
    return as_returned(chosen) if chosen else np.empty(0, dtype=np.int64)


def as_returned(values: Any) -> np.ndarray:
    """``values`` as an array, unconverted; values numpy cannot stack into one (a list among ints) become an
    object array of them, so that the guard names what the aggregator returned instead of numpy's error."""
    try:
        return np.asarray(values)
    except ValueError:
        out = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            out[i] = value
        return out


def aggregate_subsets(aggregator: Any, problem: GradedProblem, subsets: np.ndarray, scores: np.ndarray | None,
                      rng: np.random.Generator) -> np.ndarray:
    """Call ``aggregate`` if the aggregator has one, else ``choose`` per subset: ``(S,)`` class ids as the
    aggregator returned them (``evaluate`` checks them, :class:`thinkfast.evaluate.guard.GuardedAggregator`)."""
    if hasattr(aggregator, "aggregate"):
        return as_returned(aggregator.aggregate(problem, subsets, scores, rng))
    return choose_each(aggregator, problem, subsets, scores, rng)


def argmax_random_ties(values: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise argmax of ``values (S, C)`` over ``valid (S, C)`` entries, ties broken uniformly at random.

    Rows without a valid entry give ``-1``.
    """
    if values.shape[1] == 0:  # no answer classes at all (no sample of the problem had an answer)
        return np.full(values.shape[0], -1, dtype=np.int64)
    masked = np.where(valid, values, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    ties = valid & (masked == best)
    noise = rng.random(values.shape)
    chosen = np.where(ties, noise, -1.0).argmax(axis=1)
    return np.where(valid.any(axis=1), chosen, -1)


def weighted_vote(classes: np.ndarray, weights: np.ndarray, num_classes: int,
                  rng: np.random.Generator) -> np.ndarray:
    """The class with the largest total weight in each row.

    ``classes (S, k)`` int class of each chosen sample (``-1``: no answer, never votes),
    ``weights (S, k)`` float vote of each sample (1 for a plain majority vote). Returns ``(S,)``.
    """
    rows, k = classes.shape
    totals = np.zeros((rows, num_classes + 1))
    present = np.zeros((rows, num_classes + 1), dtype=bool)
    slot = np.where(classes >= 0, classes, num_classes)  # no-answer votes land in a dropped column
    row_ids = np.repeat(np.arange(rows), k)
    np.add.at(totals, (row_ids, slot.ravel()), weights.ravel())
    present[row_ids, slot.ravel()] = True
    return argmax_random_ties(totals[:, :num_classes], present[:, :num_classes], rng)


def best_of_n(classes: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The class of the highest-weight sample with an answer in each row (``(S, k)`` -> ``(S,)``)."""
    pick = argmax_random_ties(weights, classes >= 0, rng)
    rows = np.arange(classes.shape[0])
    return np.where(pick >= 0, classes[rows, np.maximum(pick, 0)], -1)


#: How score-based aggregators pick: ``weighted`` (the class with the largest summed score,
#: i.e. weighted best-of-N / highest verified mass) or ``best`` (the best-scored sample's class).
SELECTIONS = ("weighted", "best")


def select_by_scores(problem: GradedProblem, subsets: np.ndarray, scores: np.ndarray, selection: str,
                     rng: np.random.Generator) -> np.ndarray:
    """``(S,)`` classes picked from ``subsets (S, k)`` with per-sample ``scores (n,)`` by ``selection``."""
    classes, weights = problem.classes[subsets], np.asarray(scores, dtype=np.float64)[subsets]
    if selection == "weighted":
        return weighted_vote(classes, weights, problem.num_classes, rng)
    if selection == "best":
        return best_of_n(classes, weights, rng)
    raise ValueError(f"unknown selection {selection!r}; expected one of {', '.join(SELECTIONS)}")
