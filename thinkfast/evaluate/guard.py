"""Calling aggregator plugins with their results checked, so that a plugin's bug is one message, not a traceback.

``evaluate`` wraps every aggregator in :class:`GuardedAggregator`. A plugin that raises while it is created,
prepared, scored or asked to choose, that returns something other than an answer class (an int from ``-1`` to the
problem's number of classes minus one), or scores that are not one ``(n,)`` array of numbers per problem,
stops the run with a :class:`~thinkfast.plugin_guard.PluginError` naming the aggregator, its package and
module, what it did, and, for an exception, the line of the plugin's code it came from. Without the checks a
float class was truncated, a negative one silently indexed another class, and anything else was a numpy
traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from thinkfast.evaluate.aggregation import Aggregator, as_returned
from thinkfast.evaluate.graded import GradedProblem
from thinkfast.plugin_guard import PluginError, calling, describe, plugin_error

if TYPE_CHECKING:
    from thinkfast.registry import PluginEntry


@dataclass
class GuardedAggregator:
    """An aggregator plus the registry entry it came from; ``score`` and ``aggregate`` check what it returns."""

    label: str
    entry: PluginEntry
    inner: Any

    @classmethod
    def create(cls, label: str, entry: PluginEntry, options: dict[str, Any]) -> GuardedAggregator:
        """Instantiate ``entry``'s component with ``options`` (an exception from its code becomes a
        :class:`PluginError`)."""
        guard = cls(label, entry, None)
        with calling(entry, "creating it", label):
            guard.inner = entry.component(options)
        return guard

    @property
    def needs_question(self) -> bool:
        return bool(getattr(self.inner, "needs_question", False))

    @property
    def _picker(self) -> str:
        """The method that picks: ``aggregate`` if the plugin has its own (on its class or the instance, as
        :func:`~thinkfast.evaluate.aggregation.aggregate_subsets` looks it up), else ``choose``."""
        own = getattr(self.inner, "aggregate", None)
        inherited = getattr(own, "__func__", own) is Aggregator.aggregate  # the base class's loop over choose
        return "aggregate" if own is not None and not inherited else "choose"

    def prepare(self) -> None:
        if hasattr(self.inner, "prepare"):
            with calling(self.entry, "prepare()", self.label):
                self.inner.prepare()

    def score(self, problems: list[GradedProblem]) -> list[np.ndarray] | None:
        if not hasattr(self.inner, "score"):
            return None
        with calling(self.entry, "score()", self.label):
            scores = self.inner.score(problems)
        if scores is None:
            return None
        if isinstance(scores, np.ndarray) and scores.ndim == 1 and scores.dtype != object:
            raise self.error(f"score() returned one array of shape {scores.shape}; it must return None or a list "
                             f"with one array of per-sample scores (n,) for each of the {len(problems)} problems")
        listed = isinstance(scores, (list, tuple)) or (isinstance(scores, np.ndarray) and scores.ndim > 0)  # (P, n)
        if not listed or len(scores) != len(problems):
            raise self.error(f"score() returned {describe(scores)}; it must return None or a list with one array "
                             f"of per-sample scores for each of the {len(problems)} problems")
        return [self._checked_scores(s, p) for s, p in zip(scores, problems, strict=True)]

    def _checked_scores(self, scores: Any, problem: GradedProblem) -> np.ndarray:
        array = None  # what np.asarray reads as numbers (bools, a CPU tensor) worked before the guard: it still does
        if isinstance(scores, (np.ndarray, list, tuple)) or hasattr(scores, "__array__"):
            try:
                array = np.asarray(scores)
            except Exception:  # a CUDA tensor, for one
                pass
        if array is None or array.dtype.kind not in "biuf":
            raise self.error(f"score() returned {describe(scores)} for problem {problem.problem_id!r}; each "
                             f"problem's scores must be numbers, one per sample ({problem.n},)")
        if array.shape != (problem.n,):
            raise self.error(f"score() returned an array of shape {array.shape} for problem "
                             f"{problem.problem_id!r}, which has {problem.n} samples; each problem's scores "
                             f"must have shape ({problem.n},)")
        if np.isnan(array).any():
            raise self.error(f"score() returned NaN for problem {problem.problem_id!r}; give every sample a number")
        return array.astype(np.float64)

    def aggregate(self, problem: GradedProblem, subsets: np.ndarray, scores: np.ndarray | None,
                  rng: np.random.Generator) -> np.ndarray:
        method = self._picker
        # the plugin is called from this frame, not through aggregate_subsets: a method the core cannot call
        # (a wrong signature) then fails in the guarded body itself and is blamed on the plugin
        with calling(self.entry, f"{method}()", self.label):
            if method == "aggregate":
                returned = self.inner.aggregate(problem, subsets, scores, rng)
            else:
                returned = []
                for row in subsets:  # a loop, not a comprehension (a frame of its own on Python 3.11)
                    returned.append(self.inner.choose(problem, row, scores, rng))
        chosen = as_returned(returned) if method == "aggregate" or returned else np.empty(0, dtype=np.int64)
        return self._checked_classes(chosen, problem, len(subsets), method)

    def _checked_classes(self, chosen: np.ndarray, problem: GradedProblem, rows: int, method: str) -> np.ndarray:
        valid = (f"an int from -1 (no answer) to {problem.num_classes - 1}" if problem.num_classes else
                 "-1 (no answer), the only class of a problem where no sample has an answer")
        if chosen.shape != (rows,):
            got = describe(chosen.item()) if chosen.ndim == 0 else f"an array of shape {chosen.shape}"
            raise self.error(f"{method}() returned {got} for {rows} subsets of problem {problem.problem_id!r}; "
                             f"return one answer class per subset, {valid}")
        if rows and chosen.dtype.kind not in "iu":
            bad = next((c for c in chosen.tolist() if not isinstance(c, int) or isinstance(c, bool)), chosen[0])
            raise self.error(f"{method}() returned {describe(bad)} for problem {problem.problem_id!r}; an answer "
                             f"class is {valid}")
        outside = chosen[(chosen < -1) | (chosen >= problem.num_classes)]
        if outside.size:
            raise self.error(f"{method}() returned class {int(outside[0])} for problem {problem.problem_id!r}, "
                             f"which has {problem.num_classes} answer classes; an answer class is {valid}")
        return chosen.astype(np.int64)

    def error(self, what: str) -> PluginError:
        return plugin_error(self.entry, what, self.label)
