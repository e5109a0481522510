"""Scoring text with a Hugging Face model: load it, tokenize with marked positions, run batches.

Reward models and verifiers read a model's output at chosen *character* positions of a rendered
text (the token that ends a step tag, the token before a ``+`` reply, the last prompt token).
:func:`encode_marked` maps those character positions to token indices with the tokenizer's
offset mapping, so the text is tokenized exactly as the model saw it in training (no
piecewise tokenization). :func:`score_positions` runs the model in padded batches and
reduces the output at those positions to one float each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from thinkfast.errors import ModelLoadError

MODEL_CLASSES = ("causal-lm", "sequence-classification", "auto")


@dataclass
class Encoded:
    """Token ids ``(L,)`` of one text and the token indices ``(m,)`` whose outputs are read."""

    input_ids: list[int]
    positions: list[int]


def load_scoring_model(model: str, model_class: str, *, gguf_file: str = "", device: str = "auto",
                       dtype: str = "auto", trust_remote_code: bool = False, option_prefix: str = "options") -> tuple:
    """``(model, tokenizer)`` in eval mode on ``device``: a hub id, a local directory, or a GGUF in one.

    ``model_class``: ``causal-lm`` (``AutoModelForCausalLM``), ``sequence-classification``
    (``AutoModelForSequenceClassification``, outcome reward models) or ``auto`` (``AutoModel``,
    e.g. Qwen2.5-Math-PRM with ``trust_remote_code``).
    """
    import transformers

    from thinkfast.devices import resolve_device, resolve_dtype

    if not model:
        raise ModelLoadError(f"{option_prefix}.model is empty: set it to a hub id or a local model directory")
    cls = {"causal-lm": transformers.AutoModelForCausalLM,
           "sequence-classification": transformers.AutoModelForSequenceClassification,
           "auto": transformers.AutoModel}[model_class]
    torch_device = resolve_device(device)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model, **kwargs)
        loaded = cls.from_pretrained(model, dtype=resolve_dtype(dtype, torch_device), **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{option_prefix}.model: cannot load {model!r} as {model_class}: "
                             f"{str(exc).splitlines()[0]}; check the path or hub id (the hub is offline "
                             f"here, so use a local directory)") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{option_prefix}.model: {model!r} has no fast tokenizer; scoring needs "
                             f"token offsets (a tokenizer.json)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(loaded.config, "pad_token_id", None) is None:
        loaded.config.pad_token_id = tokenizer.pad_token_id
    return loaded.to(torch_device).eval(), tokenizer


def encode_marked(tokenizer: Any, text: str, char_positions: list[int], *, add_special_tokens: bool,
                  max_length: int) -> Encoded:
    """Tokenize ``text`` and map each character index to the token covering it.

    Tokens past ``max_length`` are cut off (the end of the text is lost) and positions that fall
    there dropped.
    """
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    starts = np.array([s for s, e in offsets])
    ends = np.array([e for s, e in offsets])
    positions = []
    for char in char_positions:
        hit = np.nonzero((starts <= char) & (char < ends))[0]
        if hit.size == 0:  # a character inside no token span (a space merged away): next token
            hit = np.nonzero(starts >= char)[0]
        if hit.size and hit[0] < max_length:
            positions.append(int(hit[0]))
    return Encoded(list(ids[:max_length]), positions)


def score_positions(model: Any, items: list[Encoded], reduce: Callable[[Any], Any], *, batch_size: int,
                    pad_id: int) -> list[np.ndarray]:
    """Run ``model`` over ``items`` in right-padded batches; ``reduce`` the output at each item's positions.

    ``reduce`` maps output rows ``(m, V)`` (logits, or a classifier's per-token logits) to ``(m,)``
    floats. Items are batched longest first. Returns one ``(m_i,)`` float64 array per item.
    """
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda i: -len(items[i].input_ids))
    out: list[np.ndarray] = [np.zeros(0)] * len(items)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(items[i].input_ids) for i in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                seq = items[i].input_ids
                ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, :len(seq)] = 1
            result = model(input_ids=ids.to(device), attention_mask=mask.to(device))
            logits = result.logits if hasattr(result, "logits") else result[0]  # (B, L, V) or (B, num_labels)
            for row, i in enumerate(chunk):
                if logits.dim() == 2:  # sequence classifier: one row per sequence
                    out[i] = reduce(logits[row:row + 1].float()).double().cpu().numpy()
                elif items[i].positions:
                    out[i] = reduce(logits[row, items[i].positions].float()).double().cpu().numpy()
    return out


def pair_probability(good_ids: list[int], bad_ids: list[int]) -> Callable[[Any], Any]:
    """``reduce`` for :func:`score_positions`: P(good) / (P(good) + P(bad)) from logits ``(m, V)``.

    A two-column output (a token-classification head, e.g. Qwen2.5-Math-PRM) is read as
    ``softmax[:, 1]`` instead.
    """
    import torch

    def reduce(logits: Any) -> Any:
        if logits.shape[-1] == 2:
            return torch.softmax(logits, dim=-1)[:, 1]
        probs = torch.softmax(logits, dim=-1)
        good = probs[:, good_ids].sum(-1)
        bad = probs[:, bad_ids].sum(-1)
        return good / (good + bad).clamp_min(1e-30)

    return reduce


def first_token_ids(tokenizer: Any, words: list[str]) -> list[int]:
    """The distinct first token id of each word (as tokenized alone, no special tokens)."""
    ids = []
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        if tokens and tokens[0] not in ids:
            ids.append(tokens[0])
    return ids
