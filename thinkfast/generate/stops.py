"""Stop strings on decoded text.

Rule (the engine and the reference loop share it): a sample stops after the first generated
token ``t`` for which ``decode(tokens[:t])`` contains a stop string; its text is that decoded
prefix cut just before the earliest stop string, its token count is ``t``. The engine checks
only every few steps, so it scans the tokens generated since the last check for that first
``t``; a cheap window decode rules out most rows before any scan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]


def cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """``text`` up to (not including) the earliest stop string, or None when none occurs."""
    positions = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(positions)] if positions else None


class StopChecker:
    """Finds where a token sequence first contains one of ``stops``."""

    def __init__(self, stops: Sequence[str], decode: Decode):
        self.stops = [s for s in stops if s]
        self.decode = decode
        # a token decodes to at least a byte, a character is at most 4 bytes: this many trailing
        # tokens always cover a stop string that ends in the newest tokens
        self._window = 4 * max((len(s) for s in self.stops), default=0) + 2

    def __bool__(self) -> bool:
        return bool(self.stops)

    def first_stop(self, tokens: Sequence[int], checked: int) -> tuple[int, str] | None:
        """The first ``t`` in ``(checked, len(tokens)]`` whose prefix contains a stop, with the cut text.

        ``checked`` is the count of leading tokens already known to be stop-free.
        Returns ``(t, text)`` or None.
        """
        if not self.stops or len(tokens) <= checked:
            return None
        start = max(0, checked - self._window)
        if cut_at_stop(self.decode(tokens[start:]), self.stops) is None:
            return None
        for t in range(checked + 1, len(tokens) + 1):
            text = cut_at_stop(self.decode(tokens[:t]), self.stops)
            if text is not None:
                return t, text
        return None
