r"""``reward-model``: best-of-N and weighted best-of-N with a process or outcome reward model.

A sample's response is split into steps on blank lines; a process reward model (PRM) gives each
step a probability of being correct, and the step probabilities are reduced to one score per
sample (``last``, ``min``, ``prod`` or ``mean``). Formats:

- ``rlhflow`` (RLHFlow PRMs): a chat where the question plus step 1, then each further step, is a
  user turn answered by the assistant with ``good_token``; the step score is
  P(good) / (P(good) + P(bad)) at the token before each such reply.
- ``qwen-prm`` (Qwen2.5-Math-PRM): system, user question, and one assistant turn with the steps
  each followed by ``step_tag`` (``<extra_0>``); the score is read at each tag (a two-way
  classification head: softmax column 1; a language-model head: the good/bad token pair).
- ``math-shepherd``: plain text ``question step1 ки\nstep2 ки...``; score at each ``ки`` tag from
  the ``+``/``-`` token pair.
- ``orm``: an outcome reward model with a sequence-classification head scores the whole
  (question, response) chat: sigmoid of a single logit, or softmax of the last label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from thinkfast.config.fields import option
from thinkfast.evaluate.aggregation import SELECTIONS, Aggregator, select_by_scores
from thinkfast.evaluate.graded import GradedProblem
from thinkfast.evaluate.lm_scoring import (
    Encoded,
    encode_marked,
    load_scoring_model,
    pair_probability,
    score_positions,
)

FORMATS = ("rlhflow", "qwen-prm", "math-shepherd", "orm")
STEP_AGGREGATIONS = ("last", "min", "prod", "mean")
DEFAULT_TAGS = {"qwen-prm": "<extra_0>", "math-shepherd": "ки"}
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
_MARK = "\ue000"  # private-use character standing for each scored reply or tag while rendering


@dataclass
class RewardModelOptions:
    """Options of the ``reward-model`` aggregator."""

    model: str = option("", "Reward model: hub id or local directory.")
    gguf_file: str = option("", "GGUF file inside `model` (leave empty otherwise).")
    format: str = option("rlhflow", "Prompt and score format.", choices=FORMATS)
    step_separator: str = option(r"\n\s*\n", "Regular expression that splits a response into steps "
                                 "(default: blank lines).")
    step_tag: str = option("", "Tag after each step for `qwen-prm` and `math-shepherd`; empty: the "
                           "format's default (`<extra_0>`, `ки`).")
    good_token: str = option("+", "Token meaning 'this step is correct'.")
    bad_token: str = option("-", "Token meaning 'this step is wrong'.")
    step_aggregation: str = option("min", "How step scores become one sample score.", choices=STEP_AGGREGATIONS)
    selection: str = option("weighted", "`weighted`: the answer class with the largest summed score "
                            "(weighted best-of-N); `best`: the best-scored sample's answer (best-of-N).",
                            choices=SELECTIONS)
    system_prompt: str = option(QWEN_SYSTEM, "System message of the `qwen-prm` format.")
    batch_size: int = option(8, "Sequences per forward pass.", min=1)
    max_length: int = option(4096, "Tokens per sequence at most; longer ones are cut at the end.",
                             unit="tokens", min=8)
    device: str = option("auto", "'auto' (first CUDA GPU, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = option("auto", "'auto' is bfloat16 on GPU and float32 on CPU.",
                        choices=("auto", "float32", "bfloat16", "float16"))
    trust_remote_code: bool = option(False, "Allow the model repo's own code (Qwen2.5-Math-PRM needs it).")

    def check(self) -> list[tuple[str, str]]:
        if not self.model:
            return [("model", "the reward-model aggregator needs a model (hub id or local directory)")]
        return []


def split_steps(text: str, separator: str) -> list[str]:
    """Non-empty, stripped steps of ``text`` split on the regular expression ``separator``."""
    return [s.strip() for s in re.split(separator, text) if s.strip()]


def _fill_marks(template: str, fills: list[str]) -> tuple[str, list[int]]:
    """Replace each mark in ``template`` by the next fill; returns the text and each fill's start char."""
    pieces = template.split(_MARK)
    if len(pieces) - 1 != len(fills):
        raise ValueError("the chat template dropped or duplicated a step marker")
    text, starts = pieces[0], []
    for fill, piece in zip(fills, pieces[1:], strict=True):
        starts.append(len(text))
        text += fill + piece
    return text, starts


def render(fmt: str, tokenizer: Any, question: str, steps: list[str], opt: RewardModelOptions
           ) -> tuple[str, list[int], int, bool]:
    """The text a PRM reads, the character index of each scored token, the token shift, and BOS flag.

    A score is read at ``token_covering(char) + shift``: ``-1`` for ``rlhflow`` (the token before
    the assistant's reply), ``0`` for tag formats (the tag's last character).
    """
    steps = steps or [""]
    tag = opt.step_tag or DEFAULT_TAGS.get(fmt, "")
    if fmt == "rlhflow":
        messages = []
        for i, step in enumerate(steps):
            messages.append({"role": "user", "content": f"{question} {step}" if i == 0 else step})
            messages.append({"role": "assistant", "content": _MARK})
        template = tokenizer.apply_chat_template(messages, tokenize=False)
        text, starts = _fill_marks(template, [opt.good_token] * len(steps))
        return text, starts, -1, False
    if fmt == "qwen-prm":
        messages = [{"role": "system", "content": opt.system_prompt}, {"role": "user", "content": question},
                    {"role": "assistant", "content": "".join(f"{s}{_MARK}" for s in steps)}]
        template = tokenizer.apply_chat_template(messages, tokenize=False)
        text, starts = _fill_marks(template, [tag] * len(steps))
        return text, [s + len(tag) - 1 for s in starts], 0, False
    if fmt == "math-shepherd":
        text, starts = _fill_marks(f"{question} " + "\n".join(f"{s} {_MARK}" for s in steps), [tag] * len(steps))
        return text, [s + len(tag) - 1 for s in starts], 0, True
    raise ValueError(f"format {fmt!r} has no step rendering")


def reduce_steps(step_scores: np.ndarray, how: str) -> float:
    """One sample score from ``(m,)`` step probabilities; 0 when no step could be scored."""
    if step_scores.size == 0:
        return 0.0
    return float({"last": lambda s: s[-1], "min": np.min, "prod": np.prod, "mean": np.mean}[how](step_scores))


class RewardModel(Aggregator):
    """Best-of-N / weighted best-of-N over reward-model scores (see the module docstring)."""

    Options = RewardModelOptions
    needs_question = True

    def __init__(self, options: Any = None):
        super().__init__(options)
        self._model: Any = None
        self._tokenizer: Any = None

    def prepare(self) -> None:
        """Load the reward model and its tokenizer (once)."""
        if self._model is None:
            opt = self.options
            model_class = "sequence-classification" if opt.format == "orm" else (
                "auto" if opt.trust_remote_code and opt.format == "qwen-prm" else "causal-lm")
            self._model, self._tokenizer = load_scoring_model(
                opt.model, model_class, gguf_file=opt.gguf_file, device=opt.device, dtype=opt.dtype,
                trust_remote_code=opt.trust_remote_code, option_prefix="evaluate.aggregators.options")

    def _encode(self, problem: GradedProblem, text: str) -> Encoded:
        opt, tok = self.options, self._tokenizer
        if opt.format == "orm":
            messages = [{"role": "user", "content": problem.question}, {"role": "assistant", "content": text}]
            if getattr(tok, "chat_template", None):
                rendered, special = tok.apply_chat_template(messages, tokenize=False), False
            else:
                rendered, special = f"{problem.question}\n{text}", True
            enc = tok(rendered, add_special_tokens=special, truncation=True, max_length=opt.max_length)
            return Encoded(list(enc["input_ids"]), [])
        rendered, chars, shift, special = render(opt.format, tok, problem.question,
                                                 split_steps(text, opt.step_separator), opt)
        enc = encode_marked(tok, rendered, chars, add_special_tokens=special, max_length=opt.max_length)
        enc.positions = [p + shift for p in enc.positions if p + shift >= 0]
        return enc

    def score(self, problems: list[GradedProblem]) -> list[np.ndarray]:
        """``(n,)`` score in [0, 1] for every sample of every problem, batched over all of them."""
        import torch

        self.prepare()
        opt, tok = self.options, self._tokenizer
        items = [self._encode(p, t) for p in problems for t in p.texts]
        if opt.format == "orm":
            def reduce(logits: Any) -> Any:  # (1, num_labels)
                return torch.sigmoid(logits[:, 0]) if logits.shape[-1] == 1 else torch.softmax(logits, -1)[:, -1]
        else:
            good = tok(opt.good_token, add_special_tokens=False)["input_ids"][:1]
            bad = tok(opt.bad_token, add_special_tokens=False)["input_ids"][:1]
            reduce = pair_probability(good, bad)
        raw = score_positions(self._model, items, reduce, batch_size=opt.batch_size, pad_id=tok.pad_token_id)
        flat = np.array([float(r[0]) if opt.format == "orm" and r.size else reduce_steps(r, opt.step_aggregation)
                         for r in raw])
        out, start = [], 0
        for p in problems:
            out.append(flat[start:start + p.n])
            start += p.n
        return out

    def aggregate(self, problem: GradedProblem, subsets: np.ndarray, scores: np.ndarray | None,
                  rng: np.random.Generator) -> np.ndarray:
        if scores is None:
            raise ValueError("reward-model aggregate needs the scores from score()")
        return select_by_scores(problem, subsets, scores, self.options.selection, rng)
