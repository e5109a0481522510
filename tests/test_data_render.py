"""Prompt rendering and training examples (thinkfast.data.render) with the real SmolLM2 tokenizer."""

from __future__ import annotations

import copy

import pytest

from thinkfast.data.base import Problem
from thinkfast.data.render import prompt_ids, prompt_text, resolve_template, training_example
from thinkfast.errors import DataError

PROBLEM = Problem("p1", "Tom has 3 apples and buys 4 more. How many apples does he have?", "7",
                  "Tom has 3 + 4 = 7 apples.")
SHOT = Problem("s1", "Ann has 2 pens and loses 1. How many pens are left?", "1", "Ann has 2 - 1 = 1 pen.")
INSTRUCTION = "Write the final answer as '#### <number>'."


@pytest.fixture(scope="module")
def plain_tokenizer(smollm_tokenizer):
    """The same tokenizer without a chat template: a 'base model' tokenizer."""
    tok = copy.deepcopy(smollm_tokenizer)
    tok.chat_template = None
    return tok


def test_auto_picks_chat_when_the_tokenizer_has_a_template(smollm_tokenizer, plain_tokenizer):
    assert resolve_template("auto", smollm_tokenizer) == "chat"
    assert resolve_template("auto", plain_tokenizer) == "plain"
    assert resolve_template("plain", smollm_tokenizer) == "plain"
    with pytest.raises(DataError, match="no chat template"):
        resolve_template("chat", plain_tokenizer)


def test_chat_prompt_has_shots_as_turns_and_ends_with_generation_prompt(smollm_tokenizer):
    text = prompt_text(PROBLEM, smollm_tokenizer, "auto", [SHOT], INSTRUCTION, answer_format="gsm8k")
    assert text.endswith("<|im_start|>assistant\n")
    assert text.count("<|im_start|>user") == 2
    assert "Ann has 2 - 1 = 1 pen.\n#### 1<|im_end|>" in text
    assert text.index(SHOT.question) < text.index(PROBLEM.question)
    assert f"{PROBLEM.question}\n\n{INSTRUCTION}" in text


def test_plain_prompt_layout(plain_tokenizer):
    text = prompt_text(PROBLEM, plain_tokenizer, "auto", [SHOT], INSTRUCTION, answer_format="gsm8k")
    assert text == (
        f"{INSTRUCTION}\n\n"
        f"Question: {SHOT.question}\nAnswer: Ann has 2 - 1 = 1 pen.\n#### 1\n\n"
        f"Question: {PROBLEM.question}\nAnswer:"
    )


def test_few_shot_without_solution_is_an_error(plain_tokenizer):
    with pytest.raises(DataError, match="s2"):
        prompt_text(PROBLEM, plain_tokenizer, "plain", [Problem("s2", "q?", "1")])


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_training_example_masks_exactly_response_and_eos(smollm_tokenizer, template):
    response = "Tom has 3 + 4 = 7 apples.\n#### 7"
    ids, mask = training_example(PROBLEM, response, smollm_tokenizer, template, instruction=INSTRUCTION,
                                 answer_format="gsm8k")
    prompt = prompt_ids(PROBLEM, smollm_tokenizer, template, instruction=INSTRUCTION, answer_format="gsm8k")
    assert len(ids) == len(mask)
    assert ids[: len(prompt)] == prompt
    assert not any(mask[: len(prompt)])
    assert all(mask[len(prompt):])
    assert ids[-1] == smollm_tokenizer.eos_token_id
    decoded = smollm_tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m][:-1])
    assert decoded.strip() == response
