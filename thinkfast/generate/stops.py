"""Stop strings and the answer rule on decoded text.

Rule (the engine and the reference loop share it): a sample stops after the first generated
token ``t`` for which ``decode(tokens[:t])`` contains a stop string or, with an answer format
(``generate.stop_at_answer``), has a complete answer line
(:func:`~thinkfast.data.answers.answer_end`: for "gsm8k", the first ``#### <number>`` line with
its newline). Its token count is ``t`` and its text is that decoded prefix cut just before the
earliest stop string (finish reason ``"stop"``) or just before the answer line's newline (finish
reason ``"answer"``). When both rules fire at the same ``t`` the earlier cut wins; at the same
position, ``"stop"``.

The engine checks only every few steps, so it scans the tokens generated since the last check for
that first ``t``; cheap tests rule out most rows before any scan: for stop strings a decode of the
newest tokens, for the answer rule two set lookups (a newline among the new tokens, a ``#`` anywhere)
on what each token decodes to alone, which :class:`TokenChars` learns as token ids come up. The
lookups are exact for any tokenizer whose decoding keeps ASCII characters: a ``#`` or newline of the
decoded text comes from one token, and that token decoded alone shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from thinkfast.data.answers import ANSWER_END_FORMATS, ANSWER_LINE_CHARS, answer_end

Decode = Callable[[Sequence[int]], str]

#: Finish reasons of samples the :class:`StopChecker` ended; their text is the cut text it returns.
CUT_REASONS = ("stop", "answer")

# characters an answer line spans from its "####" to its newline, plus a margin for how decoding a
# suffix of the tokens can differ from the same characters of the whole decode at its first token
_ANSWER_LOOKBACK_CHARS = 4 + ANSWER_LINE_CHARS + 4


def cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """``text`` up to (not including) the earliest stop string, or None when none occurs."""
    positions = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(positions)] if positions else None


class Stop(NamedTuple):
    """Where a sample stops: after ``t`` tokens, with ``text``, for ``reason`` (one of :data:`CUT_REASONS`)."""

    t: int
    text: str
    reason: str


class TokenChars:
    """Which token ids decode, alone, to text holding each of ``chars`` (learned lazily, one decode per id)."""

    def __init__(self, decode: Decode, chars: str):
        self.decode = decode
        self.known: set[int] = set()
        self.having: dict[str, set[int]] = {c: set() for c in chars}

    def learn(self, tokens: Sequence[int]) -> None:
        """Decode the ids of ``tokens`` not seen before."""
        for token in set(tokens) - self.known:
            piece = self.decode([token])
            for char, ids in self.having.items():
                if char in piece:
                    ids.add(token)
            self.known.add(token)

    def last_with(self, char: str, tokens: Sequence[int], start: int) -> int | None:
        """The index of the last of ``tokens[start:]`` (learned) whose text holds ``char``, or None."""
        ids = self.having[char]
        for i in range(len(tokens) - 1, start - 1, -1):
            if tokens[i] in ids:
                return i
        return None

    def first_with(self, char: str, tokens: Sequence[int]) -> int | None:
        """The index of the first of ``tokens`` (learned) whose text holds ``char``, or None."""
        ids = self.having[char]
        if ids.isdisjoint(tokens):
            return None
        return next(i for i, token in enumerate(tokens) if token in ids)


@dataclass
class SlotMemory:
    """What a :class:`StopChecker` remembers about one growing token sequence between checks, so that a
    check costs the new tokens, not the whole sequence: ``learned`` leading tokens were passed to
    :meth:`TokenChars.learn`, and ``first_hash`` is the index of the first of them that shows a ``#``."""

    learned: int = 0
    first_hash: int | None = None


class StopChecker:
    """Finds the first token after which a token sequence contains one of ``stops`` or, with
    ``answer_format`` (one of :data:`~thinkfast.data.answers.ANSWER_END_FORMATS`; others are
    ignored), a complete answer."""

    def __init__(self, stops: Sequence[str], decode: Decode, answer_format: str | None = None):
        self.stops = [s for s in stops if s]
        self.decode = decode
        self.answer_format = answer_format if answer_format in ANSWER_END_FORMATS else None
        self._chars = TokenChars(decode, "\n#")
        # a token decodes to at least a byte, a character is at most 4 bytes: this many trailing
        # tokens always cover a stop string that ends in the newest tokens
        self._window = 4 * max((len(s) for s in self.stops), default=0) + 2

    def __bool__(self) -> bool:
        return bool(self.stops) or self.answer_format is not None

    def check_text(self, text: str) -> tuple[str, str] | None:
        """``(cut text, reason)`` if ``text`` (a whole decoded sample so far) stops, else None."""
        cut = cut_at_stop(text, self.stops) if self.stops else None
        end = answer_end(text, self.answer_format) if self.answer_format else None
        if end is not None and (cut is None or end < len(cut)):
            return text[:end], "answer"
        return (cut, "stop") if cut is not None else None

    def first_stop(self, tokens: Sequence[int], checked: int, memory: SlotMemory | None = None) -> Stop | None:
        """The first ``t`` in ``(checked, len(tokens)]`` whose prefix stops (see the module docstring).

        ``checked`` is the count of leading tokens already known not to stop. ``memory``: the same
        :class:`SlotMemory` for every check of one sequence (a fresh one when the sequence restarts), so
        that a check reads only the new tokens; without it, every check reads the whole sequence.
        Returns ``Stop(t, text, reason)`` or None.
        """
        if len(tokens) <= checked or not (self._stop_string_near(tokens, checked)
                                          or self._answer_line_near(tokens, checked, memory)):
            return None
        for t in range(checked + 1, len(tokens) + 1):
            found = self.check_text(self.decode(tokens[:t]))
            if found is not None:
                return Stop(t, *found)
        return None

    def _stop_string_near(self, tokens: Sequence[int], checked: int) -> bool:
        """Whether a stop string can end in ``tokens[checked:]``: one occurs in the last tokens."""
        if not self.stops:
            return False
        return cut_at_stop(self.decode(tokens[max(0, checked - self._window):]), self.stops) is not None

    def _answer_line_near(self, tokens: Sequence[int], checked: int, memory: SlotMemory | None) -> bool:
        """Whether an answer line can end in ``tokens[checked:]``.

        First two set lookups (:class:`TokenChars`): a new token that shows a newline, and a ``#`` in a token
        up to it; most rows end here with no decode. Then its newline must be among the new tokens' text,
        and its ``####`` at most ``ANSWER_LINE_CHARS + 4`` characters before that: the tokens just before
        ``checked`` are decoded, twice as many each round, until their text holds ``####`` (maybe: scan) or
        is long enough to rule it out. Counting characters, not tokens, this holds whatever a token decodes to.
        """
        if self.answer_format is None:
            return False
        memory = memory or SlotMemory()
        fresh = tokens[memory.learned:]
        self._chars.learn(fresh)
        if memory.first_hash is None:
            first = self._chars.first_with("#", fresh)
            memory.first_hash = None if first is None else memory.learned + first
        memory.learned = len(tokens)
        newline = self._chars.last_with("\n", tokens, checked)  # an answer line ends at a new newline...
        if newline is None or memory.first_hash is None or memory.first_hash > newline:  # ...after its "####"
            return False
        new = self.decode(tokens[checked:])
        if "\n" not in new:
            return False
        back = 16
        while True:
            start = max(0, checked - back)
            text = self.decode(tokens[start:])
            if "####" in text:
                return True
            if start == 0 or len(text) - len(new) >= _ANSWER_LOOKBACK_CHARS:
                return False
            back *= 2
