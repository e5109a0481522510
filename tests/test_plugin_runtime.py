"""A plugin registered at runtime takes the same path as an installed one: its hook fills the registry, a
recipe names it, ``thinkfast evaluate`` validates its options and calls it. Nothing is installed: the module
goes into the process-wide registry through ``load_registry(extra_modules=...)``.

Also what a plugin author meets when the plugin misbehaves: an aggregator that raises, returns something
that is not an answer class, or scores the wrong number of samples stops ``evaluate`` with one line naming
the aggregator, its package and the fix; a name that clashes with a built-in is reported, not fatal.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli_errors import assert_one_error, thinkfast

from thinkfast.config import option
from thinkfast.evaluate.aggregation import Aggregator, select_by_scores

RUNS = Path(__file__).parent / "fixtures" / "evaluate"


@dataclass
class OracleOptions:
    abstain: bool = option(False, "Never pick anything.")


class Oracle(Aggregator):
    """Picks a correct class whenever the subset holds one (so accuracy@k equals pass@k)."""

    Options = OracleOptions

    def choose(self, problem, indices, scores, rng):
        if self.options.abstain:
            return -1
        right = [int(problem.classes[i]) for i in indices if problem.correct[i]]
        return right[0] if right else int(problem.classes[indices[0]])


class Raises(Aggregator):
    def choose(self, problem, indices, scores, rng):
        raise RuntimeError("my plugin exploded")


def _returning(value):
    class Returns(Aggregator):
        def choose(self, problem, indices, scores, rng):
            return value

    return Returns


class SometimesAList(Aggregator):
    """Returns a list for one subset and ints for the others: numpy cannot make one array of them."""

    def choose(self, problem, indices, scores, rng):
        return [0, 1] if indices[0] == 0 else 0


def a_namespace_aggregating(options):
    """A component that is a factory: the object it makes has its own ``aggregate`` (no class defines one)."""
    return types.SimpleNamespace(aggregate=lambda problem, subsets, scores, rng: ["a"] * len(subsets))


class ShortScores(Aggregator):
    def score(self, problems):
        return [np.ones(1) for _ in problems]

    def choose(self, problem, indices, scores, rng):
        return -1


class OneArrayOfScores(Aggregator):
    """Scores every problem with one number: one array for all of them, not one per problem."""

    def score(self, problems):
        return np.ones(len(problems))

    def choose(self, problem, indices, scores, rng):
        return -1


class TakesNoOptions:
    """The component is called with the recipe's options: a class whose ``__init__`` takes none cannot be."""

    def __init__(self):
        pass


class ChooseTakesTwo(Aggregator):
    """A ``choose`` written against another contract: the core's call fails before a line of it runs."""

    def choose(self, problem, indices):
        return -1


def an_aggregate_taking_two(options):
    """An own ``aggregate`` with the wrong signature (no class of the plugin defines it)."""
    return types.SimpleNamespace(aggregate=lambda problem, subsets: [-1] * len(subsets))


class CannotLoad(Aggregator):
    def prepare(self):
        raise OSError("no such reward model")

    def choose(self, problem, indices, scores, rng):
        return -1


class FailsToStart(Aggregator):
    def __init__(self, options=None):
        raise ValueError("needs a GPU")


def _evaluate(tmp_path: Path, *aggregators: str, extra: str = "") -> tuple:
    recipe = tmp_path / "recipe.toml"
    tables = "".join(f'[[evaluate.aggregators]]\nname = "{name}"\n{extra}\n' for name in aggregators)
    recipe.write_text(f'[evaluate]\nruns = ["{RUNS / "teacher"}"]\nbootstrap = 0\nsubsets = 20\n{tables}')
    out = tmp_path / "out"
    return thinkfast("evaluate", str(recipe), "-o", str(out)), out


def test_a_runtime_plugin_is_listed_validated_and_used_by_evaluate(use_plugins, tmp_path):
    use_plugins(aggregators=dict(oracle=Oracle))
    listed = json.loads(thinkfast("plugins", "--json").stdout)
    assert {"family": "aggregators", "name": "oracle", "package": "<local>", "version": "",
            "module": "runtime_plugins"} in listed["plugins"]
    bad, _ = _evaluate(tmp_path, "oracle", extra="options = { abstain = 3 }")
    assert_one_error(bad, "evaluate.aggregators[0].options.abstain: expected true or false, got 3")

    result, out = _evaluate(tmp_path, "oracle", "majority")
    assert result.exit_code == 0, result.output
    (model,) = json.loads((out / "report.json").read_text())["results"]
    # at k = 1 and k = n every k-subset is drawn (8 and 1 of them): there the oracle's accuracy is pass@k exactly
    oracle, coverage = model["accuracy"]["oracle"]["mean"], model["coverage"]["mean"]
    assert oracle[0] == pytest.approx(coverage[0]) and oracle[-1] == pytest.approx(coverage[-1])
    assert model["accuracy"]["majority"]["mean"][-1] < oracle[-1]


def _scoring(make_scores):
    """An aggregator that scores each sample with ``make_scores(problem)`` and picks the best-scored one."""

    class Scores(Aggregator):
        def score(self, problems):
            return [make_scores(p) for p in problems]

        def aggregate(self, problem, subsets, scores, rng):
            return select_by_scores(problem, subsets, scores, "best", rng)

    return Scores


@pytest.mark.parametrize("make_scores", [
    lambda p: p.correct.copy(),                        # a pass/fail verifier: bools
    lambda p: torch.from_numpy(p.num_tokens.copy()),   # a model's scores left on the CPU as a tensor
    lambda p: [1] * p.n,                               # ints in a list
], ids=["bools", "cpu-tensor", "int-list"])
def test_scores_that_numpy_reads_as_numbers_are_accepted(use_plugins, tmp_path, make_scores):
    """What select_by_scores took before the guard (it converts with np.asarray(scores, float64)) passes it."""
    use_plugins(aggregators=dict(scored=_scoring(make_scores)))
    result, out = _evaluate(tmp_path, "scored")
    assert result.exit_code == 0, result.output


def test_scores_as_one_array_of_a_row_per_problem_are_accepted(use_plugins, tmp_path):
    """A vectorised scorer's ``(P, n)`` array (every fixture problem has 8 samples) indexes as a list of rows."""
    class Stacked(_scoring(None)):
        def score(self, problems):
            return np.stack([p.num_tokens for p in problems]).astype(np.float32)

    use_plugins(aggregators=dict(scored=Stacked))
    result, out = _evaluate(tmp_path, "scored")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("component, fragments", [
    (Raises, ["choose() raised RuntimeError: my plugin exploded", "test_plugin_runtime.py:"]),
    (_returning("2"), ["choose() returned '2' (str)", "an int from -1 (no answer) to 3"]),
    (_returning(0.5), ["choose() returned 0.5 (float)"]),
    (_returning(None), ["choose() returned None"]),
    (_returning(99), ["choose() returned class 99", "has", "answer classes"]),
    (_returning(-3), ["choose() returned class -3"]),
    (SometimesAList, ["choose() returned a list of 2 items for problem 'gsm8k-train-0'"]),
    (a_namespace_aggregating, ["aggregate() returned 'a' (str)"]),
    (ChooseTakesTwo, ["choose() raised TypeError: ", "takes 3 positional arguments but 5 were given"]),
    (an_aggregate_taking_two, ["aggregate() raised TypeError: ", "takes 2 positional arguments but 4 were given"]),
    (ShortScores, ["score() returned an array of shape (1,) for problem 'gsm8k-train-0'", "(8,)"]),
    (OneArrayOfScores, ["score() returned one array of shape (12,); it must return None or a list with one array "
                        "of per-sample scores (n,) for each of the 12 problems"]),
    (CannotLoad, ["prepare() raised OSError: no such reward model", "test_plugin_runtime.py:"]),
    (FailsToStart, ["creating it raised ValueError: needs a GPU (at ", "test_plugin_runtime.py:"]),
    (TakesNoOptions, ["creating it raised TypeError: ", "takes 1 positional argument but 2 were given"]),
], ids=["raises", "str", "float", "none", "no-such-class", "negative-class", "a-list-among-ints", "own-aggregate",
        "choose-signature", "aggregate-signature", "short-scores", "one-array-of-scores", "prepare-raises",
        "init-raises", "init-takes-no-options"])
def test_a_misbehaving_aggregator_is_one_line_naming_it(use_plugins, tmp_path, component, fragments):
    use_plugins(aggregators=dict(bad=component))
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("earlier report\n")
    result, out = _evaluate(tmp_path, "bad")
    assert_one_error(result, "aggregator 'bad' from <local> (runtime_plugins): ", *fragments)
    assert (out / "report.json").read_text() == "earlier report\n"  # nothing already written is lost


def test_a_name_clash_with_a_builtin_is_reported_and_the_builtin_kept(use_plugins, tmp_path):
    registry = use_plugins(aggregators=dict(majority=Oracle, oracle=Oracle))
    assert registry.entry("aggregators", "majority").package == "thinkfast"
    assert registry.entry("aggregators", "oracle").package == "<local>"  # the plugin's other names still load
    listed = thinkfast("plugins", "--json")
    assert listed.exit_code == 0
    (error,) = json.loads(listed.stdout)["load_errors"]
    assert "'majority'" in error["error"] and "built-in" in error["error"] and "rename" in error["error"]
    shown = " ".join(thinkfast("plugins").stdout.split())  # the table's warning lines, unwrapped
    assert "warning: plugin runtime_plugins from <local> loaded all but one name: " in shown, shown
    result, _ = _evaluate(tmp_path, "majority")
    assert result.exit_code == 0, result.output


@dataclass
class NegativeDefault:
    power: float = option(-1.0, "Exponent of the weight.", min=0.0)


class BadDefault(Oracle):
    Options = NegativeDefault


class UndecoratedOptions(Oracle):
    class Options:
        abstain = False


@pytest.mark.parametrize("component, fragment", [
    (BadDefault, "the defaults of its Options break its own rules (Options.power: -1.0 is below the minimum 0.0): "
                 "fix those defaults"),
    (UndecoratedOptions, "not a dataclass: decorate the class with @dataclasses.dataclass"),
], ids=["default-below-min", "not-a-dataclass"])
def test_an_aggregator_whose_options_are_broken_is_one_line_naming_it(use_plugins, tmp_path, component, fragment):
    """Before, the first was 'options.power: -1.0 is below the minimum 0.0' (no plugin named, and a key the
    recipe never set), the second a TypeError traceback from dataclasses.fields."""
    use_plugins(aggregators=dict(bad=component))
    result, _ = _evaluate(tmp_path, "bad")
    assert_one_error(result, "evaluate.aggregators[0].name: no aggregators plugin named 'bad': <local> registers it, "
                             "but the aggregators component 'bad' (test_plugin_runtime.", fragment)


def test_a_class_where_no_sample_has_an_answer_is_not_offered_as_a_range(use_plugins):
    """A problem without answer classes accepts only -1: the message said 'an int from -1 (no answer) to -1'."""
    from thinkfast.evaluate.graded import GradedProblem
    from thinkfast.evaluate.guard import GuardedAggregator

    registry = use_plugins(aggregators=dict(zero=_returning(0)))
    guard = GuardedAggregator.create("zero", registry.entry("aggregators", "zero"), {})
    problem = GradedProblem("p0", "gsm8k", "4", "2 + 2?", ["no", "idea"], [None, None], np.array([-1, -1]),
                            np.zeros(2, bool), [], np.zeros(0, bool), np.array([3, 4]))
    with pytest.raises(Exception) as info:
        guard.aggregate(problem, np.array([[0], [1]]), None, np.random.default_rng(0))
    assert "returned class 0 for problem 'p0', which has 0 answer classes; an answer class is -1 (no answer), the " \
           "only class of a problem where no sample has an answer" in str(info.value)


def test_a_returned_value_is_described_in_a_few_words():
    from thinkfast.plugin_guard import describe as _describe

    assert [_describe(v) for v in (None, [3], (1, 2), "2")] == ["None", "a list of 1 item", "a tuple of 2 items",
                                                                "'2' (str)"]
