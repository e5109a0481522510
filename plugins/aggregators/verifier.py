"""``verifier``: weight each sample by how likely it is correct, pick the answer with the most verified mass.

Two sources of the per-sample probability:

- ``mode = "model"``: a causal language model is shown the question and the sample (``prompt``,
  rendered with its chat template when it has one) and asked whether the solution is correct;
  the score is P(yes) / (P(yes) + P(no)) over the first tokens of ``yes_words`` / ``no_words``.
- ``mode = "check"``: the dataset plugin's programmatic ``check(problem, text)`` (1 or 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from thinkfast.config.fields import option
from thinkfast.errors import EngineUnavailableError
from thinkfast.evaluate.aggregation import SELECTIONS, Aggregator, select_by_scores
from thinkfast.evaluate.graded import GradedProblem
from thinkfast.evaluate.lm_scoring import (
    Encoded,
    first_token_ids,
    load_scoring_model,
    pair_probability,
    score_positions,
)

DEFAULT_PROMPT = ("Here is a math problem and a proposed solution.\n\nProblem:\n{question}\n\n"
                  "Proposed solution:\n{response}\n\nIs the proposed solution correct? Answer yes or no.")


@dataclass
class VerifierOptions:
    """Options of the ``verifier`` aggregator."""

    mode: str = option("model", "'model': ask a language model; 'check': the dataset plugin's programmatic "
                       "check.", choices=("model", "check"))
    model: str = option("", "Verifier model (mode 'model'): hub id or local directory.")
    gguf_file: str = option("", "GGUF file inside `model` (leave empty otherwise).")
    prompt: str = option(DEFAULT_PROMPT, "Question put to the model; `{question}` and `{response}` are filled in.")
    template: str = option("auto", "'chat' (tokenizer chat template), 'plain', or 'auto' (chat when the "
                           "tokenizer has one).", choices=("auto", "chat", "plain"))
    yes_words: list[str] = option(default_factory=lambda: ["Yes", "yes", " Yes", " yes"],
                                  help="Spellings of 'yes' (their first tokens count as yes).")
    no_words: list[str] = option(default_factory=lambda: ["No", "no", " No", " no"],
                                 help="Spellings of 'no'.")
    selection: str = option("weighted", "`weighted`: the answer class with the largest summed probability; "
                            "`best`: the most probably correct sample's answer.", choices=SELECTIONS)
    batch_size: int = option(8, "Sequences per forward pass.", min=1)
    max_length: int = option(4096, "Prompt tokens at most; longer prompts lose their start.", unit="tokens", min=8)
    device: str = option("auto", "'auto' (first CUDA GPU, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = option("auto", "'auto' is bfloat16 on GPU and float32 on CPU.",
                        choices=("auto", "float32", "bfloat16", "float16"))

    def check(self) -> list[tuple[str, str]]:
        if self.mode == "model" and not self.model:
            return [("model", "mode 'model' needs a verifier model (hub id or local directory), "
                              "or set mode = 'check'")]
        return []


class Verifier(Aggregator):
    """Highest verified mass (or best single sample) over verifier probabilities."""

    Options = VerifierOptions

    def __init__(self, options: Any = None):
        super().__init__(options)
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def needs_question(self) -> bool:  # type: ignore[override]
        return self.options.mode == "model"

    def _encode(self, problem: GradedProblem, text: str) -> Encoded:
        opt, tok = self.options, self._tokenizer
        content = opt.prompt.format(question=problem.question, response=text)
        use_chat = opt.template == "chat" or (opt.template == "auto" and getattr(tok, "chat_template", None))
        if use_chat:
            rendered = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                               add_generation_prompt=True)
            ids = tok(rendered, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(content + "\n", add_special_tokens=True)["input_ids"]
        ids = list(ids[-opt.max_length:])
        return Encoded(ids, [len(ids) - 1])

    def prepare(self) -> None:
        """Load the verifier model and its tokenizer (once; mode 'model' only)."""
        opt = self.options
        if opt.mode == "model" and self._model is None:
            self._model, self._tokenizer = load_scoring_model(
                opt.model, "causal-lm", gguf_file=opt.gguf_file, device=opt.device, dtype=opt.dtype,
                option_prefix="evaluate.aggregators.options")

    def _model_scores(self, problems: list[GradedProblem]) -> np.ndarray:
        opt = self.options
        self.prepare()
        tok = self._tokenizer
        reduce = pair_probability(first_token_ids(tok, opt.yes_words), first_token_ids(tok, opt.no_words))
        items = [self._encode(p, t) for p in problems for t in p.texts]
        raw = score_positions(self._model, items, reduce, batch_size=opt.batch_size, pad_id=tok.pad_token_id)
        return np.array([float(r[0]) for r in raw])

    @staticmethod
    def _check_scores(problems: list[GradedProblem]) -> np.ndarray:
        from thinkfast.data import get_plugin
        from thinkfast.data.base import Problem

        plugins: dict[str, Any] = {}  # one per dataset and options, created as generate created it
        out = []
        for p in problems:
            key = json.dumps([p.dataset, p.dataset_options], sort_keys=True)
            if key not in plugins:  # guarded: a dataset plugin's failure names that plugin, not this one
                plugins[key] = get_plugin(p.dataset, p.dataset_options or None)
            plugin = plugins[key]
            problem = Problem(id=p.problem_id, question=p.question, answer=p.reference)
            for text in p.texts:
                verdict = plugin.check(problem, text)
                if verdict is None:
                    raise EngineUnavailableError(
                        f"verifier mode 'check': dataset plugin {p.dataset!r} has no programmatic check; "
                        f"use mode = 'model' with a verifier model")
                out.append(1.0 if verdict else 0.0)
        return np.array(out)

    def score(self, problems: list[GradedProblem]) -> list[np.ndarray]:
        """``(n,)`` probability that each sample is correct, for every problem."""
        flat = self._model_scores(problems) if self.options.mode == "model" else self._check_scores(problems)
        bounds = np.cumsum([0] + [p.n for p in problems])
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def aggregate(self, problem: GradedProblem, subsets: np.ndarray, scores: np.ndarray | None,
                  rng: np.random.Generator) -> np.ndarray:
        if scores is None:
            raise ValueError("verifier aggregate needs the scores from score()")
        return select_by_scores(problem, subsets, scores, self.options.selection, rng)
