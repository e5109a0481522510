r"""Final-answer extraction and normalisation, per answer format.

Three formats:

- ``"gsm8k"``: a number. Looked for, in order: the *first* ``#### N`` line (GSM8K's end-of-solution
  marker: what a model writes after it is run-on text, as in lm-evaluation-harness's strict match;
  a ``####`` line that does not start with a number is a markdown heading and is skipped); the last
  "answer is N" / "final answer: N" phrase; the last ``\boxed{N}``; the last number in the
  text. Numbers are normalised: ``$``, thousands commas, a trailing period, ``%`` and trailing
  units are dropped, ``1,000.50`` becomes ``1000.5`` and ``10.00`` becomes ``10``.
- ``"math"``: a LaTeX expression, the content of the last ``\boxed{...}`` or ``\fbox{...}``
  (nested braces allowed), else of the last "answer is ..." phrase. Lightly normalised
  (``\dfrac`` to ``\frac``, ``\left``/``\right``, degrees, surrounding ``$`` and spaces);
  deciding equivalence of expressions is left to the grader.
- ``"plain"``: free text: the last ``#### ...`` line, "answer is ..." phrase or boxed content,
  else the last non-empty line; whitespace collapsed, trailing period removed, numbers
  normalised as above.

:func:`answer_end` says where a sample may end without changing what :func:`extract_answer` reads from
it: for "gsm8k", at the end of its first ``#### <number>`` line (``generate``'s ``stop_at_answer``).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

ANSWER_FORMATS = ("gsm8k", "math", "plain")
#: The formats for which :func:`answer_end` can end a text ("math" and "plain" read the *last* answer).
ANSWER_END_FORMATS = ("gsm8k",)
#: :func:`answer_end` ends a text at a ``####`` answer line only if its newline comes within this many
#: characters after the ``####`` (whitespace, newlines included, counts); a longer line never ends it. The bound
#: keeps the check that ``generate`` runs on the last few tokens exact.
ANSWER_LINE_CHARS = 64

INSTRUCTIONS = {
    "gsm8k": "Solve the problem step by step. On the last line, write the final answer as a number "
             "in the form '#### <number>'.",
    "math": "Solve the problem step by step. Put the final answer in \\boxed{}.",
    "plain": "Solve the problem step by step. End with 'The answer is <answer>.'",
}

_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-"})
# A number as people write it: optional sign and $, thousands commas or plain digits, decimals.
_NUMBER = re.compile(r"(?:(?<![\w)])-)?\\?\$?\s?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?|(?<!\d)\.\d+")
_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"answer\s*(?:is\s*:?|:)\s*", re.IGNORECASE)
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _answer_phrases(text: str) -> list[str]:
    """What follows each "answer is" / "answer:" up to the end of its line, in order."""
    return [text[m.end():].split("\n", 1)[0] for m in _ANSWER_IS.finditer(text)]


def _check_format(answer_format: str) -> None:
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {answer_format!r}; expected one of {', '.join(ANSWER_FORMATS)}")


def normalize_number(text: str) -> str | None:
    """``text`` (one number, maybe with ``$``, commas, ``%``) in canonical form; None if not a number.

    ``"$1,000.00"`` -> ``"1000"``, ``"0.50"`` -> ``"0.5"``, ``"-3."`` -> ``"-3"``, ``"3/4"`` -> ``"3/4"``.
    """
    s = text.translate(_MINUS).strip().rstrip(".").replace("\\$", "").replace("$", "").replace("\\%", "")
    s = s.rstrip("%").replace(" ", "")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    frac = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if frac:
        num, den = int(frac.group(1)), int(frac.group(2))
        return str(num) if den == 1 else f"{num}/{den}"
    if not re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", s):
        return None
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _numbers(text: str) -> list[str]:
    """Every number in ``text``, normalised, in order."""
    found = []
    for match in _NUMBER.finditer(text.translate(_MINUS)):
        value = normalize_number(match.group(0))
        if value is not None:
            found.append(value)
    return found


def _first_number(text: str) -> str | None:
    numbers = _numbers(text)
    return numbers[0] if numbers else None


def extract_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` or ``\fbox{...}`` (nested braces balanced), else None.

    ``\boxed 5`` (no braces) gives ``5``; an unclosed brace gives None.
    """
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    i = start + len(cmd)
    if i < len(text) and text[i] == " ":
        rest = text[i:].strip()
        match = re.match(r"[^\s$]+", rest)
        return match.group(0) if match else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def normalize_math(answer: str) -> str:
    r"""Light LaTeX normalisation of a MATH answer (``\dfrac`` -> ``\frac``, no ``$``, degrees...)."""
    s = answer.strip()
    s = re.sub(r"\\text\{\s*\}", "", s)
    for old, new in (("\\!", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""),
                     ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""), ("\\%", "")):
        s = s.replace(old, new)
    s = s.strip().rstrip(".").strip().strip("$").strip().rstrip(".").strip()
    s = re.sub(r"\s+", " ", s)
    number = normalize_number(s)
    return number if number is not None else s


def normalize_plain(answer: str) -> str:
    """Plain answers: whitespace collapsed, outer quotes/``$``/trailing period removed, numbers canonical."""
    s = re.sub(r"\s+", " ", answer).strip().rstrip(".").strip().strip("\"'*").strip()
    number = normalize_number(s)
    return number if number is not None else s


def normalize_answer(answer: str, answer_format: str) -> str:
    """A reference answer in the same normal form :func:`extract_answer` produces."""
    _check_format(answer_format)
    if answer_format == "gsm8k":
        number = normalize_number(answer)
        return number if number is not None else (_first_number(answer) or answer.strip())
    if answer_format == "math":
        return normalize_math(answer)
    return normalize_plain(answer)


def _first_answer_line(text: str) -> re.Match[str] | None:
    """The first ``####`` match (of :data:`_HASHES`) whose content starts like a number; None if none.

    Only "#### <number>" lines count: "#### Step 2: ..." is a markdown heading, not an answer. The
    content starts at the first non-space character after the ``####``, on its line or a later one.
    """
    for match in _HASHES.finditer(text):
        if re.match(r"[-\u2212$\\.\d]", match.group(1).strip()):
            return match
    return None


def extract_gsm8k(text: str) -> str | None:
    """The final number of a GSM8K-style solution (rules in the module docstring); None if none."""
    hashes = _first_answer_line(text)
    if hashes is not None:
        number = _first_number(hashes.group(1))
        if number is not None:
            return number
    phrases = _answer_phrases(text)
    if phrases:
        number = _first_number(phrases[-1])
        if number is not None:
            return number
    boxed = extract_boxed(text)
    if boxed is not None:
        number = _first_number(boxed)
        if number is not None:
            return number
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def answer_end(text: str, answer_format: str) -> int | None:
    """Where ``text`` can end without changing its extracted answer, or None (rules below).

    "gsm8k": :func:`extract_gsm8k` reads the *first* ``#### <number>`` line when it holds a number, and
    nothing after that line can change the answer. Once that line is complete (its newline is in
    ``text``) and holds a number, the index of that newline is returned: ``text`` cut there
    (``text[:end]``, the newline dropped) extracts the same answer as ``text`` and as any longer text
    that starts with it. The line is the one :func:`extract_gsm8k` uses, headings (``#### Step 2``)
    skipped; if it holds no number (the extractor then reads other parts of the text), or if its
    newline comes more than :data:`ANSWER_LINE_CHARS` characters after the ``####``, the result is None
    for ``text`` and every longer text. "math" and "plain" read the *last* answer: always None.

    First firing is monotone: for the shortest prefix of a text that gives ``end`` (``text[:end + 1]``),
    every shorter prefix gives None and every longer one gives ``end``.
    """
    _check_format(answer_format)
    if answer_format not in ANSWER_END_FORMATS:
        return None
    line = _first_answer_line(text)
    if line is None:
        return None
    end = line.end()  # the newline that ends the line, or the end of an unfinished text
    if end == len(text) or end - line.start() - 4 > ANSWER_LINE_CHARS or _first_number(line.group(1)) is None:
        return None
    return end


def extract_math(text: str) -> str | None:
    r"""The last boxed expression, else the last "answer is ..." phrase, normalised; None if neither."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return normalize_math(boxed)
    phrases = _answer_phrases(text)
    if phrases and phrases[-1].strip():
        return normalize_math(phrases[-1])
    return None


def extract_plain(text: str) -> str | None:
    """A free-text answer (rules in the module docstring); None for empty text."""
    hashes = [h for h in _HASHES.findall(text) if h.strip()]
    if hashes:
        return normalize_plain(hashes[-1])
    phrases = [p for p in _answer_phrases(text) if p.strip()]
    if phrases:
        return normalize_plain(phrases[-1])
    boxed = extract_boxed(text)
    if boxed is not None:
        return normalize_plain(boxed)
    lines = [line for line in text.splitlines() if line.strip()]
    return normalize_plain(lines[-1]) if lines else None


def extract_answer(text: str, answer_format: str) -> str | None:
    """The final answer in a model's ``text``, for ``answer_format`` "gsm8k", "math" or "plain"."""
    _check_format(answer_format)
    if answer_format == "gsm8k":
        return extract_gsm8k(text)
    if answer_format == "math":
        return extract_math(text)
    return extract_plain(text)


def _as_decimal(value: str) -> Decimal | None:
    frac = re.fullmatch(r"(-?\d+)/(\d+)", value)
    try:
        if frac:
            den = Decimal(frac.group(2))
            return Decimal(frac.group(1)) / den if den else None
        return Decimal(value)
    except InvalidOperation:
        return None


def answers_equal(predicted: str | None, reference: str, answer_format: str) -> bool:
    """Whether an extracted answer equals the reference (both normalised first).

    Numbers compare by value (``"3/4" == "0.75"``); other answers compare as normalised strings
    (case-insensitively for "plain"). No symbolic equivalence: that is the grader's job.
    """
    if predicted is None:
        return False
    a, b = normalize_answer(predicted, answer_format), normalize_answer(reference, answer_format)
    if a == b:
        return True
    da, db = normalize_number(a), normalize_number(b)
    if da is not None and db is not None:
        va, vb = _as_decimal(da), _as_decimal(db)
        return va is not None and vb is not None and va == vb
    return answer_format == "plain" and a.casefold() == b.casefold()


def format_response(solution: str | None, answer: str, answer_format: str) -> str | None:
    r"""A worked ``solution`` ending in ``answer`` written the way :data:`INSTRUCTIONS` asks; None without one.

    "gsm8k": ``solution`` + ``"\n#### N"``; "math": the solution as is when it already boxes
    its answer, else with ``"The answer is $\boxed{...}$."`` appended; "plain": with
    ``"The answer is ..."`` appended.
    """
    _check_format(answer_format)
    if solution is None:
        return None
    body = solution.rstrip()
    if answer_format == "gsm8k":
        return f"{body}\n#### {answer}"
    if answer_format == "math":
        if extract_boxed(body) is not None:
            return body
        return f"{body}\nThe answer is $\\boxed{{{answer}}}$."
    return f"{body}\nThe answer is {answer}."
