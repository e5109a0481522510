"""Training examples for a distillation stage: problems plus responses, tokenised with loss masks.

The responses are the dataset's reference solutions (:meth:`DatasetPlugin.response_text`), or,
when ``data.responses`` names a ``thinkfast generate`` output (``samples.jsonl``), the teacher's
samples joined to the problems by ``problem_id`` (every sample of a problem becomes one example;
``data.responses_filter = "correct"`` keeps only samples whose extracted answer equals the
reference).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from thinkfast.config.common import DataSpec
from thinkfast.data import load_problems, no_problems_error
from thinkfast.data.answers import answers_equal
from thinkfast.data.base import Problem
from thinkfast.data.files import field, iter_jsonl_objects
from thinkfast.data.guard import GuardedDataset
from thinkfast.data.render import assemble_example, eos_token_id, prompt_text, resolve_template, response_segment
from thinkfast.errors import DataError


def load_responses(path: str | Path, warnings: list[str] | None = None) -> dict[str, list[str]]:
    """``problem_id -> [text, ...]`` from a samples file (JSON lines with ``problem_id`` and ``text``).

    The file is ``generate``'s output, so a last line cut short (``generate`` killed mid-write) is left out,
    as ``generate`` and ``evaluate`` leave it out, with a line about it appended to ``warnings``; any other
    bad line is a :class:`DataError` naming ``file:line``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"data.responses: {p} does not exist; point it at the samples.jsonl that "
                        f"`thinkfast generate` wrote")
    if p.suffix != ".jsonl":
        raise DataError(f"data.responses: {p} is not a .jsonl file (expected a `thinkfast generate` samples.jsonl)")
    responses: dict[str, list[str]] = defaultdict(list)
    def cut(where: str) -> None:
        if warnings is not None:
            warnings.append(f"data.responses: {where}: the last line is cut short (generate was stopped while "
                            f"writing it); that sample is left out")

    for where, record in iter_jsonl_objects(p, on_cut_end=cut):
        responses[field(record, "problem_id", where)].append(field(record, "text", where))
    return dict(responses)


def response_pairs(plugin: GuardedDataset, problems: list[Problem], spec: DataSpec,
                   warnings: list[str] | None = None) -> list[tuple[Problem, str]]:
    """``(problem, response)`` pairs to train on (rules in the module docstring); what a reader must know
    about the responses file is appended to ``warnings``."""
    if not spec.responses:
        pairs = [(p, r) for p in problems if (r := plugin.response_text(p)) is not None]
        if problems and not pairs:
            raise DataError(f"dataset {spec.dataset!r} has no reference solutions to train on; set "
                            f"data.responses to a samples.jsonl from `thinkfast generate`")
        return pairs
    responses = load_responses(spec.responses, warnings)
    pairs = []
    for problem in problems:
        for text in responses.get(problem.id, []):
            if spec.responses_filter == "correct" and not answers_equal(
                plugin.extract_answer(text), problem.answer, plugin.answer_format
            ):
                continue
            pairs.append((problem, text))
    if problems and not pairs:
        raise DataError(f"data.responses: no sample in {spec.responses} matches a problem id of dataset "
                        f"{spec.dataset!r} split {spec.split!r} (filter: {spec.responses_filter}); check that "
                        f"the samples were generated from the same data selection")
    return pairs


@dataclass
class TrainingData:
    """What a stage trains on before tokenisation: the plugin, the few-shot problems and the pairs."""

    plugin: GuardedDataset
    shots: list[Problem]
    pairs: list[tuple[Problem, str]]
    warnings: list[str] = dataclass_field(default_factory=list)  # e.g. a cut last line left out of data.responses


def training_data(spec: DataSpec, key: str = "data") -> TrainingData:
    """Read everything ``spec`` selects (problems, few-shot examples, responses); no tokenizer needed.

    ``distill`` calls this for every stage before it loads the teacher, so a missing file, a bad line
    or an empty selection stops it before any work. Raises :class:`DataError` naming the file or the
    recipe key (``key``, e.g. ``distill.stages[1].data``).
    """
    plugin, problems = load_problems(spec)
    if not problems:
        raise no_problems_error(key, spec)
    warnings: list[str] = []
    pairs = response_pairs(plugin, problems, spec, warnings)
    return TrainingData(plugin, plugin.few_shot_problems(spec), pairs, warnings)


def training_examples(spec: DataSpec, tokenizer: Any, chunk_size: int = 1024,
                      data: TrainingData | None = None) -> list[tuple[list[int], list[bool]]]:
    """``(input_ids, loss_mask)`` for every training pair ``spec`` selects, in problem order.

    Each example equals :func:`thinkfast.data.render.training_example` of its pair; prompts and
    responses are tokenised in batches of ``chunk_size`` (the fast tokenizer's batch encoding).
    ``data``: what :func:`training_data` already read for ``spec`` (read here when None).
    """
    data = data or training_data(spec)
    kind = resolve_template(spec.template, tokenizer)
    eos = eos_token_id(tokenizer)
    plugin, shots, pairs = data.plugin, data.shots, data.pairs
    instruction = spec.instruction or plugin.instruction
    examples = []
    for start in range(0, len(pairs), chunk_size):
        chunk = pairs[start : start + chunk_size]
        prompts = [prompt_text(p, tokenizer, kind, shots, instruction, answer_format=plugin.answer_format)
                   for p, _ in chunk]
        prompt_tokens = tokenizer(prompts, add_special_tokens=(kind == "plain"))["input_ids"]
        responses = [response_segment(r, kind) for _, r in chunk]
        response_tokens = tokenizer(responses, add_special_tokens=False)["input_ids"]
        examples.extend(assemble_example(list(p), list(r), eos)
                        for p, r in zip(prompt_tokens, response_tokens, strict=True))
    return examples
