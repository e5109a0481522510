"""Turning problems into prompts and training examples.

Two templates:

- ``"chat"``: the tokenizer's chat template. Each worked example is a user turn (question +
  instruction) followed by an assistant turn (its solution); the problem is the last user turn
  and the prompt ends with the generation prompt (``add_generation_prompt=True``).
- ``"plain"``: for base models without a chat template::

      <instruction>

      Question: <few-shot question>
      Answer: <few-shot solution>

      Question: <question>
      Answer:

``"auto"`` picks ``"chat"`` when the tokenizer has a chat template.

A training example is the prompt's tokens followed by the response's tokens and the
tokenizer's EOS token; the loss mask is True exactly on the response tokens and the EOS. Prompt
and response are tokenised separately, so the prompt tokens are exactly those a sampler is given
at generation time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thinkfast.data.answers import format_response
from thinkfast.data.base import Problem
from thinkfast.errors import DataError

TEMPLATES = ("auto", "chat", "plain")


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_template(template: str, tokenizer: Any) -> str:
    """``"chat"`` or ``"plain"`` for a recipe's ``template`` value ("auto", "chat" or "plain")."""
    if template not in TEMPLATES:
        raise DataError(f"data.template: {template!r} is not one of {', '.join(TEMPLATES)}")
    if template == "auto":
        return "chat" if has_chat_template(tokenizer) else "plain"
    if template == "chat" and not has_chat_template(tokenizer):
        raise DataError("data.template = 'chat' but the tokenizer has no chat template; "
                        "set data.template = 'plain' (or 'auto') for a base model")
    return template


def _user_text(question: str, instruction: str) -> str:
    return f"{question.strip()}\n\n{instruction.strip()}" if instruction.strip() else question.strip()


def _shot_response(shot: Problem, answer_format: str) -> str:
    response = format_response(shot.solution, shot.answer, answer_format)
    if response is None:
        raise DataError(f"few-shot example {shot.id!r} has no solution to show; use problems with solutions")
    return response


def chat_messages(problem: Problem, few_shot: Sequence[Problem] = (), instruction: str = "",
                  answer_format: str = "plain") -> list[dict[str, str]]:
    """The conversation (user/assistant turns) that asks ``problem``, after the worked examples."""
    messages: list[dict[str, str]] = []
    for shot in few_shot:
        messages.append({"role": "user", "content": _user_text(shot.question, instruction)})
        messages.append({"role": "assistant", "content": _shot_response(shot, answer_format)})
    messages.append({"role": "user", "content": _user_text(problem.question, instruction)})
    return messages


def plain_prompt(problem: Problem, few_shot: Sequence[Problem] = (), instruction: str = "",
                 answer_format: str = "plain") -> str:
    """The plain "Question: ...\\nAnswer:" prompt (layout in the module docstring)."""
    parts = [instruction.strip()] if instruction.strip() else []
    for shot in few_shot:
        parts.append(f"Question: {shot.question.strip()}\nAnswer: {_shot_response(shot, answer_format)}")
    parts.append(f"Question: {problem.question.strip()}\nAnswer:")
    return "\n\n".join(parts)


def prompt_text(problem: Problem, tokenizer: Any, template: str = "auto", few_shot: Sequence[Problem] = (),
                instruction: str = "", *, answer_format: str = "plain") -> str:
    """The generation prompt for ``problem`` as text.

    ``answer_format`` decides how the worked examples' final answers are written (see
    :func:`thinkfast.data.answers.format_response`); :meth:`DatasetPlugin.prompt` passes the
    plugin's own.
    """
    if resolve_template(template, tokenizer) == "chat":
        messages = chat_messages(problem, few_shot, instruction, answer_format)
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_prompt(problem, few_shot, instruction, answer_format)


def _encode(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def prompt_ids(problem: Problem, tokenizer: Any, template: str = "auto", few_shot: Sequence[Problem] = (),
               instruction: str = "", *, answer_format: str = "plain") -> list[int]:
    """The prompt's token ids, as a sampler should be given them.

    Chat templates write their own special tokens (BOS included), so none are added; a plain
    prompt gets the tokenizer's usual special tokens (BOS for Llama tokenizers).
    """
    kind = resolve_template(template, tokenizer)
    text = prompt_text(problem, tokenizer, kind, few_shot, instruction, answer_format=answer_format)
    return _encode(tokenizer, text, add_special_tokens=(kind == "plain"))


def eos_token_id(tokenizer: Any) -> int:
    """The tokenizer's EOS id; :class:`DataError` when it has none."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise DataError("the tokenizer has no EOS token; training examples end with EOS so the model learns to stop")
    return int(eos)


def response_segment(response: str, template: str) -> str:
    """The response text as it follows the prompt: stripped, after one space with the plain template."""
    return response.strip() if template == "chat" else " " + response.strip()


def assemble_example(prompt: list[int], response: list[int], eos: int) -> tuple[list[int], list[bool]]:
    """``(prompt + response + [eos], mask)`` with the mask True on the response and the EOS."""
    return prompt + response + [eos], [False] * len(prompt) + [True] * (len(response) + 1)


def training_example(problem: Problem, response: str, tokenizer: Any, template: str = "auto",
                     few_shot: Sequence[Problem] = (), instruction: str = "", *,
                     answer_format: str = "plain") -> tuple[list[int], list[bool]]:
    """``(input_ids, loss_mask)``: the prompt, then ``response`` and EOS; the mask marks response + EOS.

    Both lists have length ``len(prompt tokens) + len(response tokens) + 1``. With the plain
    template the response follows "Answer:" after one space.
    """
    eos = eos_token_id(tokenizer)
    kind = resolve_template(template, tokenizer)
    prompt = prompt_ids(problem, tokenizer, kind, few_shot, instruction, answer_format=answer_format)
    answer = _encode(tokenizer, response_segment(response, kind), add_special_tokens=False)
    return assemble_example(prompt, answer, eos)
