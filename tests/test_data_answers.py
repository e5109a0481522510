"""Final-answer extraction and normalisation (thinkfast.data.answers)."""

from __future__ import annotations

import json

import pytest

from thinkfast.data.answers import (
    ANSWER_LINE_CHARS,
    answer_end,
    answers_equal,
    extract_answer,
    extract_boxed,
    extract_gsm8k,
    extract_math,
    extract_plain,
    format_response,
    normalize_answer,
    normalize_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,000", "1000"),
        ("$1,234.50", "1234.5"),
        ("\\$5", "5"),
        ("72.", "72"),
        ("10.00", "10"),
        ("0.50", "0.5"),
        (".5", "0.5"),
        ("-3", "-3"),
        ("\u22127", "-7"),
        ("25%", "25"),
        ("3/4", "3/4"),
        ("8/1", "8"),
        ("1,2", None),
        ("abc", None),
        ("", None),
    ],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
        ("So the total is 5.\n#### 1,080", "1080"),
        ("#### $18.", "18"),
        ("#### Step 1: add\n3 + 4 = 7\n#### Step 2: double\nThe answer is 14.", "14"),
        ("#### -3", "-3"),
        ("#### 72\nSome trailing chatter with 99 in it.", "72"),
        ("24 km in 2 hours.\n#### 24\nSo Ben travels 36 minutes.\n#### 36", "24"),  # run-on after the marker
        ("She earns 3 + 4 = 7 dollars. The answer is 7.", "7"),
        ("The answer is: $1,234.50.", "1234.5"),
        ("The final answer is 18 dollars.", "18"),
        ("**Final answer:** 42", "42"),
        ("I think the answer is 5. Wait, the answer is 6 apples.", "6"),
        ("So we get $\\boxed{1,000}$.", "1000"),
        ("First 10 - 4 = 6, then 6 * 2 = 12 pens", "12"),
        ("The temperature fell to -5 degrees", "-5"),
        ("pages 3-4 have 20 words", "20"),
        ("No digits here at all.", None),
        ("", None),
    ],
)
def test_extract_gsm8k(text, expected):
    assert extract_gsm8k(text) == expected


def test_gsm8k_hashes_win_over_answer_phrase_and_last_number():
    text = "The answer is 3.\n#### 4\nNow 5 more."
    assert extract_gsm8k(text) == "4"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $x = \\boxed{5}$", "5"),
        ("\\boxed{\\frac{1}{2}} then finally \\boxed{\\dfrac{\\sqrt{3}}{2}}.", "\\frac{\\sqrt{3}}{2}"),
        ("\\fbox{x^{2}+1}", "x^{2}+1"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "( 3, \\frac{\\pi}{2} )"),
        ("\\boxed{10^\\circ}", "10"),
        ("\\boxed{1,000}", "1000"),
        ("The answer is $x+1$.", "x+1"),
        ("\\boxed 7$ done", "7"),
        ("\\boxed{3", None),
        ("no final answer", None),
    ],
)
def test_extract_math(text, expected):
    assert extract_math(text) == expected


def test_extract_boxed_nested_braces_and_last_wins():
    text = "first \\boxed{a} then \\boxed{\\frac{a}{\\sqrt{b^{2}}}} end"
    assert extract_boxed(text) == "\\frac{a}{\\sqrt{b^{2}}}"
    assert extract_boxed("\\fbox{1} and \\boxed{2}") == "2"
    assert extract_boxed("\\boxed{2} and \\fbox{1}") == "1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thinking...\nThe answer is Paris.", "Paris"),
        ("#### blue whale", "blue whale"),
        ("lots of thought\n\n  yes.  \n", "yes"),
        ("The answer is $1,000.", "1000"),
        ("", None),
    ],
)
def test_extract_plain(text, expected):
    assert extract_plain(text) == expected


def test_answers_equal_by_value_and_format():
    assert answers_equal("3/4", "0.75", "gsm8k")
    assert answers_equal("1,000", "1000", "gsm8k")
    assert not answers_equal("1001", "1000", "gsm8k")
    assert not answers_equal(None, "1000", "gsm8k")
    assert answers_equal("Paris", "paris.", "plain")
    assert answers_equal("\\dfrac{1}{2}", "\\frac{1}{2}", "math")
    assert not answers_equal("\\frac{1}{3}", "\\frac{1}{2}", "math")


def test_extract_answer_dispatch_and_unknown_format():
    assert extract_answer("#### 5", "gsm8k") == "5"
    assert extract_answer("\\boxed{y}", "math") == "y"
    with pytest.raises(ValueError, match="unknown answer format"):
        extract_answer("5", "latex")


@pytest.mark.parametrize("fmt", ["gsm8k", "math", "plain"])
def test_format_response_round_trips_through_extraction(fmt):
    answer = {"gsm8k": "1080", "math": "\\frac{3}{4}", "plain": "Paris"}[fmt]
    response = format_response("Step one.\nStep two uses 17 and 3.", answer, fmt)
    assert extract_answer(response, fmt) == normalize_answer(answer, fmt)
    assert format_response(None, answer, fmt) is None


def test_every_gsm8k_train_reference_extracts_to_its_answer(gsm8k_train_path):
    """The real GSM8K train answers: the extractor recovers the number after '####' for every line."""
    with open(gsm8k_train_path) as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 7473
    for record in records:
        reference = record["answer"].split("####")[-1].strip()
        assert extract_gsm8k(record["answer"]) == normalize_number(reference), record["answer"]


# ---------------------------------------------------------------- answer_end: where a sample can stop


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6 * 7 = 42.\n#### 42\nQuestion: next", 19),  # the answer line's newline: the text is cut there
        ("#### 42\n#### 16\n#### 16\n168", 7),  # run-on after the first answer line
        ("#### 42", None),  # the line is not finished: "#### 425" may follow
        ("#### 42\r\n", 8),  # "\r" is part of the line
        ("#### Step 2: add\n3 + 4 = 7\n#### 7\nmore", 33),  # a heading is skipped, as the extractor skips it
        ("####\n\n 42\nrest", 9),  # the extractor's "####\s*" spans newlines: the answer is on the third line
        ("####\n\n", None),  # no content yet
        ("#### $1,234.50\nmore", 14),
        ("#### -3 apples\n", 14),
        ("#### .5\n", 7),
        ("#### $\n#### 5\n6", None),  # "$" starts like a number but is none: the extractor reads the rest of the text
        ("##### 5\n", None),  # "# 5" is a heading to the extractor
        ("#### Step #### 5\n", None),  # one match: the inner "####" is part of the heading's line
        ("The answer is 3.\n#### 4\n", 23),  # the answer line wins over phrases
        ("#### 7" + " " * 62 + "\n", 68),  # exactly ANSWER_LINE_CHARS characters between the #### and its newline
        ("#### 7" + " " * 63 + "\n", None),  # one more: the line is too long to end the sample
        ("####" + "\n" * 63 + "7\n", 68),  # the newlines between #### and the number count too
    ],
)
def test_answer_end_gsm8k(text, expected):
    end = answer_end(text, "gsm8k")
    assert end == expected
    if end is not None:
        assert text[end] == "\n" and extract_answer(text[:end], "gsm8k") == extract_answer(text, "gsm8k")


def test_answer_line_bound_is_the_documented_constant():
    assert ANSWER_LINE_CHARS == 64
    assert answer_end("####" + " " * (ANSWER_LINE_CHARS - 1) + "5\n", "gsm8k") == ANSWER_LINE_CHARS + 4
    assert answer_end("####" + " " * ANSWER_LINE_CHARS + "5\n", "gsm8k") is None


@pytest.mark.parametrize("fmt", ["math", "plain"])
def test_answer_end_never_fires_for_formats_that_read_the_last_answer(fmt):
    for text in ("#### 5\n#### 6\n", "\\boxed{5}\nThe answer is 5.\n\\boxed{6}\n", "The answer is 5.\n"):
        assert answer_end(text, fmt) is None
    with pytest.raises(ValueError, match="unknown answer format"):
        answer_end("#### 5\n", "latex")


def test_answer_end_keeps_the_extracted_answer_and_fires_first_at_its_newline(gsm8k_like_texts):
    """Property, over random GSM8K-like texts: wherever the rule fires, cutting there keeps the extracted answer
    of the whole text and of every prefix longer than the cut; every prefix up to the newline gives None, every
    longer prefix gives the same end (first firing is monotone)."""
    fired = 0
    for text in gsm8k_like_texts(seed=0, count=3000):
        end = answer_end(text, "gsm8k")
        prefix_ends = [answer_end(text[:p], "gsm8k") for p in range(len(text) + 1)]
        if end is None:
            assert prefix_ends == [None] * (len(text) + 1), text
            continue
        fired += 1
        assert text[end] == "\n", text
        assert prefix_ends == [None] * (end + 1) + [end] * (len(text) - end), text
        kept = extract_answer(text[:end], "gsm8k")
        assert kept is not None and kept == extract_answer(text, "gsm8k"), text
        assert all(extract_answer(text[:p], "gsm8k") == kept for p in range(end + 1, len(text) + 1)), text
    assert 300 < fired < 2700  # both outcomes are common: the property is tested, not vacuous
