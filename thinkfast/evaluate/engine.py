"""``thinkfast evaluate``: grade every run, score aggregators, compute metrics vs k and vs seconds.

Time budget model. ``run.json``'s ``problem_seconds`` gives the seconds spent generating each
problem's ``n`` samples; one sample costs ``g = mean over problems of problem_seconds / n``
seconds. An aggregator's ``score`` call is timed; spread over every sample it scored it costs
``a`` seconds per sample (its ``prepare``, which loads a scoring model once, is not timed: that
one-off cost would otherwise land on whichever run is evaluated first). Drawing k samples and
aggregating them then takes ``k * g`` seconds (coverage) and ``k * (g + a)`` seconds (accuracy).
This is a throughput model: it assumes the samples of a problem are generated in parallel at the
run's measured rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinkfast.errors import DataError, RecipeError, ThinkfastError
from thinkfast.evaluate.config import AggregatorSpec, EvaluateSection
from thinkfast.evaluate.equivalence import EquivalencePool
from thinkfast.evaluate.graded import GradedProblem
from thinkfast.evaluate.grading import GradeCache, Grader
from thinkfast.evaluate.guard import GuardedAggregator
from thinkfast.evaluate.metrics import (
    accuracy_per_problem,
    bootstrap,
    coverage_per_problem,
    k_values,
)
from thinkfast.evaluate.runs import (
    Run,
    disambiguate_labels,
    read_run,
    restrict_to_common_problems,
    run_dataset_options,
    run_warnings,
    unique_run_dirs,
)

GRADES_FILE = "grades.jsonl"
REPORT_FILE = "report.json"


def registry_extractor(override: str = "", options: dict[str, dict[str, Any]] | None = None,
                       datasets: Iterable[str] = ()) -> Callable[[str, str], str | None]:
    """``extract(dataset, text)`` through each dataset plugin's ``extract_answer`` (``override``: one plugin),
    guarded (:mod:`thinkfast.data.guard`).

    ``options``: ``{dataset: options}`` to create a plugin with (:func:`run_dataset_options`; defaults for
    the others). The plugins of ``datasets`` (or ``override``) are created now, so that one that cannot be
    created stops ``evaluate`` with its error instead of failing every extraction.
    """
    from thinkfast.data import get_plugin

    plugins: dict[str, Any] = {}

    def plugin(name: str) -> Any:
        if name not in plugins:
            plugins[name] = get_plugin(name, (options or {}).get(name))
        return plugins[name]

    for name in sorted({override} if override else set(datasets)):
        plugin(name)

    def extract(dataset: str, text: str) -> str | None:
        return plugin(override or dataset).extract_answer(text)

    return extract


def _run_extractor(run: Run, override: str) -> Callable[[str, str], str | None]:
    """:func:`registry_extractor` for ``run``'s samples; options ``run.json`` gives that the plugin refuses
    are named with the file."""
    try:
        return registry_extractor(override, run_dataset_options(run), {p.dataset for p in run.problems})
    except RecipeError as err:
        raise DataError(f"{run.path / 'run.json'}: settings.dataset_options do not fit the dataset plugin as "
                        f"installed now: {'; '.join(err.problems)}") from None


@dataclass
class Series:
    """A metric at each k: ``(len(ks),)`` means and interval bounds (None without bootstrap), and the
    seconds each k costs."""

    ks: list[int]
    seconds: list[float | None]
    mean: list[float]
    low: list[float | None]
    high: list[float | None]

    def as_dict(self) -> dict[str, Any]:
        return {"k": self.ks, "seconds": self.seconds, "mean": self.mean, "low": self.low, "high": self.high}


@dataclass
class ModelResult:
    """Every number for one (model, dataset) pair."""

    model: str
    dataset: str
    run_dir: str
    problems: int
    n_samples: int
    seconds_per_sample: float | None
    answered: float
    coverage: Series
    accuracy: dict[str, Series] = field(default_factory=dict)
    aggregator_seconds_per_sample: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "dataset": self.dataset, "run_dir": self.run_dir, "problems": self.problems,
            "n_samples": self.n_samples, "generation_seconds_per_sample": self.seconds_per_sample,
            "answered_fraction": self.answered, "coverage": self.coverage.as_dict(),
            "accuracy": {name: s.as_dict() for name, s in self.accuracy.items()},
            "aggregator_seconds_per_sample": self.aggregator_seconds_per_sample,
        }


def seconds_per_sample(run: Run, problems: list[GradedProblem]) -> float | None:
    """Mean generation seconds of one sample over ``problems`` (None when ``run.json`` has no timings)."""
    per_sample = [run.problem_seconds[p.problem_id] / p.n for p in problems if p.problem_id in run.problem_seconds]
    return float(np.mean(per_sample)) if per_sample else None


def _series(per_k: dict[int, np.ndarray], seconds_per_k: Callable[[int], float | None], section: EvaluateSection,
            rng: np.random.Generator) -> Series:
    estimates = {k: bootstrap(v, section.bootstrap, section.confidence, rng) for k, v in per_k.items()}
    ks = sorted(per_k)
    return Series(ks, [seconds_per_k(k) for k in ks], [estimates[k].mean for k in ks],
                  [estimates[k].low for k in ks], [estimates[k].high for k in ks])


def instantiate_aggregators(specs: list[AggregatorSpec]) -> dict[str, GuardedAggregator]:
    """``{label: aggregator instance}`` built through the registry, each guarded (:mod:`thinkfast.evaluate.guard`)."""
    from thinkfast.registry import get_registry

    registry = get_registry()
    return {spec.display: GuardedAggregator.create(spec.display, registry.entry("aggregators", spec.name), spec.options)
            for spec in specs}


def evaluate_problems(run: Run, dataset: str, problems: list[GradedProblem], aggregators: dict[str, Any],
                      section: EvaluateSection, seed: int) -> ModelResult:
    """Coverage and each aggregator's accuracy for one model's problems of one dataset."""
    n = min(p.n for p in problems)
    ks = k_values(n)
    gen = seconds_per_sample(run, problems)
    rng = np.random.default_rng([seed, 1])
    coverage = _series({k: coverage_per_problem(problems, k) for k in ks},
                       lambda k: None if gen is None else k * gen, section, rng)
    result = ModelResult(model=run.label, dataset=dataset, run_dir=str(run.path), problems=len(problems),
                         n_samples=n, seconds_per_sample=gen,
                         answered=float(np.mean([(p.classes >= 0).mean() for p in problems])), coverage=coverage)
    for label, aggregator in aggregators.items():
        if hasattr(aggregator, "prepare"):
            aggregator.prepare()  # loading a scoring model is no cost per sample
        start = time.perf_counter()
        scores = aggregator.score(problems) if hasattr(aggregator, "score") else None
        cost = (time.perf_counter() - start) / sum(p.n for p in problems) if scores is not None else 0.0
        per_k = {k: accuracy_per_problem(problems, aggregator, scores, k, section.subsets, seed) for k in ks}
        result.accuracy[label] = _series(per_k, lambda k, c=cost: None if gen is None else k * (gen + c),
                                         section, rng)
        result.aggregator_seconds_per_sample[label] = cost
    return result


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: per-model results plus grading statistics."""

    results: list[ModelResult]
    grading: dict[str, Any]
    graded: dict[str, list[GradedProblem]]
    warnings: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """The content of ``report.json``."""
        return {"results": [r.as_dict() for r in self.results], "grading": self.grading,
                "warnings": self.warnings}


def evaluate(section: EvaluateSection, run_dirs: list[str | Path], *, output_dir: Path | None, seed: int = 0,
             extract: Callable[[str, str], str | None] | None = None,
             on_graded: Callable[[int, int], None] | None = None) -> Evaluation:
    """Grade every run in ``run_dirs`` and compute all metrics; grades are cached in ``output_dir``.

    ``on_graded(done, total)``: called as samples are graded, with the samples graded so far and
    the number to grade (progress display).
    """
    if not run_dirs:
        raise ThinkfastError("no runs to evaluate: pass --runs DIR (one per model) or set evaluate.runs")
    unique_dirs, repeated = unique_run_dirs(run_dirs)
    runs = [read_run(d) for d in unique_dirs]
    restricted = restrict_to_common_problems(runs) if section.common_problems else []
    disambiguate_labels(runs)  # two runs of the same model, or two directories of one name
    aggregators = instantiate_aggregators(section.aggregators)
    if extract is None:
        _require_dataset_plugins(runs, section.dataset)
    extractors = [extract or _run_extractor(run, section.dataset) for run in runs]  # each run's plugins, created now
    cache = GradeCache(output_dir / GRADES_FILE if output_dir is not None else None)
    to_grade = sum(len(p.texts) for run in runs for p in run.problems)
    done = 0

    def count(samples: int) -> None:
        nonlocal done
        done += samples
        if on_graded is not None:
            on_graded(done, to_grade)

    count(0)
    start = time.perf_counter()
    graded: dict[str, list[GradedProblem]] = {}
    with EquivalencePool(section.workers, section.grading_timeout) as pool:
        grader = Grader(extractors[0], pool, cache, on_graded=count)
        for run, run_extract in zip(runs, extractors, strict=True):
            grader.extract = run_extract  # one grader (its counts and cache) over every run
            graded[run.label] = grader.grade(run.problems)
        killed = pool.killed
    grading_seconds = time.perf_counter() - start
    total = sum(p.n for problems in graded.values() for p in problems)
    results = []
    for run in runs:
        by_dataset: dict[str, list[GradedProblem]] = {}
        for p in graded[run.label]:
            by_dataset.setdefault(section.dataset or p.dataset, []).append(p)
        for dataset, problems in by_dataset.items():
            _require_questions(problems, aggregators, run)
            results.append(evaluate_problems(run, dataset, problems, aggregators, section, seed))
    grading = {"samples": total, "seconds": grading_seconds,
               "samples_per_second": total / grading_seconds if grading_seconds > 0 else None,
               "workers": section.workers, "timeout_seconds": section.grading_timeout,
               "verdicts": dict(grader.counts), "workers_killed": killed}
    return Evaluation(results, grading, graded,
                      repeated + restricted + run_warnings(runs) + grader.extraction_warnings())


def _require_dataset_plugins(runs: list[Run], override: str = "") -> None:
    """The dataset plugin that extracts answers (``override``, else each one the samples name) is installed;
    otherwise every extraction would fail and each model would score 0 %."""
    from thinkfast.errors import PluginNotFoundError
    from thinkfast.registry import get_registry

    registry = get_registry()
    if override:
        try:
            registry.entry("datasets", override)
        except PluginNotFoundError as exc:
            raise ThinkfastError(f"evaluate.dataset: {exc}") from None
        return
    for run in runs:
        for name in sorted({p.dataset for p in run.problems}):
            try:
                registry.entry("datasets", name)
            except PluginNotFoundError as exc:
                raise DataError(f"{run.path / 'samples.jsonl'}: the samples are of dataset {name!r}, whose answers "
                                f"its plugin extracts, but {exc}; install that plugin or set evaluate.dataset to "
                                f"one that reads these answers") from None


def _require_questions(problems: list[GradedProblem], aggregators: dict[str, Any], run: Run) -> None:
    needs = [label for label, agg in aggregators.items() if getattr(agg, "needs_question", False)]
    missing = [p.problem_id for p in problems if not p.question]
    if needs and missing:
        raise DataError(f"{run.path / 'samples.jsonl'}: aggregator(s) {', '.join(needs)} read the problem "
                        f"statement but samples of {len(missing)} problem(s) (e.g. {missing[0]!r}) have no "
                        f"`question` field; add it to each sample")
