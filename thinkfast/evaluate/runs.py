"""Reading what ``thinkfast generate`` writes: ``samples.jsonl`` and ``run.json`` in one run directory.

``samples.jsonl`` holds one JSON object per sample with ``problem_id``, ``sample_index``, ``text``,
``num_tokens``, ``finish_reason``, ``answer`` (the reference) and ``dataset``; an optional
``question`` (the problem statement) is used by aggregators that score text with a model.
``run.json`` holds the model name and ``problem_seconds`` (problem id -> seconds spent
generating that problem's samples). A run interrupted before it wrote them (``run.json`` with
status ``running``) gets them from its samples' ``seconds``, summed per problem as ``generate``
does. See docs/architecture.md, "Files between subcommands".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkfast.data.files import iter_jsonl_objects
from thinkfast.errors import DataError
from thinkfast.generate.output import shard_files

REQUIRED_SAMPLE_KEYS = ("problem_id", "sample_index", "text", "answer", "dataset")


@dataclass
class ProblemSamples:
    """All samples of one problem, ordered by ``sample_index``."""

    problem_id: str
    dataset: str
    reference: str
    question: str
    texts: list[str]
    num_tokens: list[int]
    finish_reasons: list[str]
    seconds: list[float | None] = field(default_factory=list)  # per sample, when samples.jsonl has them
    dataset_options: dict[str, Any] = field(default_factory=dict)  # the dataset plugin's, as generate used them


@dataclass
class Run:
    """One model's generation run: its label, problems, and timing metadata from ``run.json``."""

    label: str
    path: Path
    problems: list[ProblemSamples]
    problem_seconds: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Samples per problem (the smallest count if problems differ)."""
        return min((len(p.texts) for p in self.problems), default=0)


def _label(meta: dict[str, Any], run_dir: Path) -> str:
    """``run.json``'s ``label``, else the model's name when it is a hub id (``org/name``), else the dir name."""
    if meta.get("label"):
        return str(meta["label"])
    model = str(meta.get("model") or "")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model) and not Path(model).exists():
        return model.split("/")[1]
    return run_dir.resolve().name


def unique_run_dirs(run_dirs: list[str | Path]) -> tuple[list[Path], list[str]]:
    """``run_dirs`` with each directory once (the same directory however it is written) and one
    warning per directory given more than once."""
    kept: dict[Path, Path] = {}
    warnings = []
    for run_dir in map(Path, run_dirs):
        first = kept.setdefault(run_dir.resolve(), run_dir)
        if first is not run_dir:
            also = f" (also as {first})" if str(first) != str(run_dir) else ""
            warnings.append(f"{run_dir}: given more than once{also}; evaluated once")
    return list(kept.values()), warnings


def disambiguate_labels(runs: list[Run]) -> None:
    """Tell apart runs that share a label by the shortest tail of their directories' paths that differs.

    Runs labelled by their directory names, ``runs/a/student`` and ``/tmp/b/student``, become
    ``a/student`` and ``b/student``; runs of one model, ``Llama-3.2-1B-Instruct`` in
    ``runs/teacher-gsm8k`` and ``runs/teacher-math``, become ``Llama-3.2-1B-Instruct (teacher-gsm8k)``
    and ``Llama-3.2-1B-Instruct (teacher-math)``. The directories must differ (:func:`unique_run_dirs`).
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    for label, group in groups.items():
        if len(group) < 2:
            continue
        paths = [run.path.resolve() for run in group]
        for depth in range(1, max(len(p.parts) for p in paths) + 1):
            tails = [str(p) if depth >= len(p.parts) else "/".join(p.parts[-depth:]) for p in paths]
            if len(set(tails)) == len(tails):
                break
        for run, path, tail in zip(group, paths, tails, strict=True):
            run.label = tail if label == path.name else f"{label} ({tail})"


def read_samples(path: Path, on_cut_end: Callable[[str], None] | None = None) -> list[ProblemSamples]:
    """Group ``samples.jsonl`` by problem; :class:`DataError` names the file and line of a bad record.

    ``on_cut_end(where)`` hears of a last line cut short (``generate`` killed mid-write), which is left
    out as ``generate`` itself leaves it out when it resumes; without it, that line is an error too.
    """
    groups: dict[str, dict[str, Any]] = {}
    for where, record in iter_jsonl_objects(path, on_cut_end):
        missing = [k for k in REQUIRED_SAMPLE_KEYS if k not in record]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)}; a sample needs "
                            f"{', '.join(REQUIRED_SAMPLE_KEYS)} (see docs/architecture.md)")
        pid = str(record["problem_id"])
        group = groups.setdefault(pid, {"dataset": str(record["dataset"]), "answer": str(record["answer"]),
                                        "question": str(record.get("question") or ""), "samples": {}})
        if str(record["answer"]) != group["answer"]:
            raise DataError(f"{where}: problem {pid!r} has reference {record['answer']!r} here but "
                            f"{group['answer']!r} on an earlier line; one problem has one reference")
        index = record["sample_index"]
        if not isinstance(index, int) or index in group["samples"]:
            raise DataError(f"{where}: sample_index {index!r} of problem {pid!r} is not a new integer")
        group["samples"][index] = record
    if not groups:
        raise DataError(f"{path}: no samples; run `thinkfast generate` first or check the path")
    problems = []
    for pid, group in groups.items():
        ordered = [group["samples"][i] for i in sorted(group["samples"])]
        problems.append(ProblemSamples(
            problem_id=pid, dataset=group["dataset"], reference=group["answer"], question=group["question"],
            texts=[str(r["text"]) for r in ordered],
            num_tokens=[int(r.get("num_tokens") or 0) for r in ordered],
            finish_reasons=[str(r.get("finish_reason") or "") for r in ordered],
            seconds=[float(r["seconds"]) if isinstance(r.get("seconds"), (int, float)) else None for r in ordered],
        ))
    return problems


def run_warnings(runs: list[Run]) -> list[str]:
    """What a reader of the report must know: unfinished runs, uneven samples, runs over different problems,
    runs timed on different devices."""
    warnings = []
    for run in runs:
        if run.meta.get("cut_line"):
            warnings.append(f"{run.meta['cut_line']}: the last line was cut short (the generation was killed "
                            f"while writing it); that sample is left out")
        if run.meta.get("problem_seconds_from") == "samples":
            warnings.append(f"{run.path}: run.json has no problem_seconds (the run did not finish); they were "
                            f"summed from the samples' seconds")
        if not run.problem_seconds:
            warnings.append(f"{run.path}: run.json has no problem_seconds and its samples no seconds, so its "
                            f"time budget is unknown; it is left out of the plots against seconds")
        unmerged = shard_files(run.path)
        if unmerged:
            warnings.append(f"{run.path}: {', '.join(f.name for f in unmerged)} hold samples a stopped torchrun "
                            f"generate did not merge into samples.jsonl; they are not evaluated: run the same "
                            f"generate again with -o {run.path} to merge them")
        status = run.meta.get("status")
        if status not in (None, "complete"):
            warnings.append(f"{run.path}: run.json says status {status!r}: the generation did not finish, so "
                            f"its missing problems are not in the averages")
        counts = {len(p.texts) for p in run.problems}
        if len(counts) > 1:
            warnings.append(f"{run.path}: problems have {min(counts)} to {max(counts)} samples; metrics use "
                            f"k up to {min(counts)}")
    problem_sets = {run.path: {p.problem_id for p in run.problems} for run in runs}
    if len({frozenset(s) for s in problem_sets.values()}) > 1:
        sizes = ", ".join(f"{path}: {len(s)}" for path, s in problem_sets.items())
        warnings.append(f"the runs cover different problems ({sizes}); compare them on a common set "
                        f"(--common-problems)")
    devices = {str(run.meta["device"]) for run in runs if run.meta.get("device")}
    if len(devices) > 1:
        named = ", ".join(f"{run.path}: {run.meta.get('device', 'unknown')}" for run in runs)
        warnings.append(f"the runs were generated on different devices ({named}); their seconds, and the "
                        f"plots against seconds, compare the devices as well as the models")
    return warnings


def read_run(run_dir: str | Path) -> Run:
    """Read one generation output directory (``samples.jsonl`` + ``run.json``)."""
    run_dir = Path(run_dir)
    samples_path = run_dir / "samples.jsonl"
    if not samples_path.is_file():
        if shard_files(run_dir):
            raise DataError(f"{run_dir}: no samples.jsonl yet, only the per-rank files of a `thinkfast generate` "
                            f"under torchrun that stopped before merging them; run the same generate again with "
                            f"-o {run_dir} to finish the run and merge them")
        raise DataError(f"{run_dir}: no samples.jsonl here; pass a directory written by `thinkfast generate`")
    meta: dict[str, Any] = {}
    meta_path = run_dir / "run.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{meta_path}: not valid JSON ({exc.msg})") from None
        if not isinstance(meta, dict):
            raise DataError(f"{meta_path}: expected a JSON object")
    seconds = meta.get("problem_seconds") or {}
    if not isinstance(seconds, dict) or not all(isinstance(v, (int, float)) for v in seconds.values()):
        raise DataError(f"{meta_path}: problem_seconds must map problem ids to seconds (numbers)")
    cut: list[str] = []
    problems = read_samples(samples_path, on_cut_end=cut.append)
    if cut:
        meta = {**meta, "cut_line": cut[0]}
    if not seconds and problems and all(t is not None for p in problems for t in p.seconds):
        seconds = {p.problem_id: sum(p.seconds) for p in problems}  # type: ignore[arg-type]
        meta = {**meta, "problem_seconds_from": "samples"}
        _check_seconds(seconds, f"{samples_path}: the samples' seconds of problem", "sum to")
    else:
        _check_seconds(seconds, f"{meta_path}: problem_seconds of problem", "is")
    run = Run(label=_label(meta, run_dir), path=run_dir, problems=problems,
              problem_seconds={str(k): float(v) for k, v in seconds.items()}, meta=meta)
    options = run_dataset_options(run)
    for problem in problems:
        problem.dataset_options = dict(options.get(problem.dataset, {}))
    return run


def _check_seconds(seconds: dict[str, Any], what: str, verb: str) -> None:
    """Every problem's seconds are a finite number >= 0: a NaN or infinite time (Python's ``json`` reads both)
    would make every seconds figure NaN, in ``report.json`` and on the plots' log axes. The error reads
    ``<what> '<id>' <verb> <value>``."""
    for pid, value in seconds.items():
        if isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise DataError(f"{what} {pid!r} {verb} {value!r}; seconds must be finite numbers >= 0")


def run_dataset_options(run: Run) -> dict[str, dict[str, Any]]:
    """``{dataset: options}`` as ``generate`` used them for ``run`` (``run.json``'s ``settings``), so that its
    samples are graded by the plugin as it was configured then (a ``jsonl`` run's ``answer_format``)."""
    settings = run.meta.get("settings") or {}
    name, options = settings.get("dataset"), settings.get("dataset_options")
    return {name: dict(options)} if isinstance(name, str) and isinstance(options, dict) and options else {}


def complete_count(run: Run) -> int:
    """Samples a problem of ``run`` needs to count as complete: ``n_samples`` from ``run.json``'s settings,
    else the most any problem has."""
    n = run.meta.get("n_samples") or run.meta.get("settings", {}).get("n_samples")
    return int(n) if n else max((len(p.texts) for p in run.problems), default=0)


def restrict_to_common_problems(runs: list[Run]) -> list[str]:
    """Keep, in every run, only the problems that every run completed (:func:`complete_count` samples);
    returns one sentence per run that lost problems. Raises :class:`DataError` when none is left."""
    complete = [{p.problem_id for p in run.problems if len(p.texts) >= complete_count(run)} for run in runs]
    common = set.intersection(*complete) if complete else set()
    if not common:
        raise DataError("evaluate.common_problems: no problem is complete in every run "
                        f"({', '.join(str(r.path) for r in runs)}); finish the runs or turn common_problems off")
    notes = []
    for run in runs:
        before = len(run.problems)
        run.problems = [p for p in run.problems if p.problem_id in common]
        if len(run.problems) < before:
            notes.append(f"{run.path}: evaluated on the {len(common)} problems every run completed "
                         f"({before - len(run.problems)} of its {before} left out)")
    return notes
