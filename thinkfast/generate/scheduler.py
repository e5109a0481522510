"""Continuous batching: which (problem, sample) work item runs in which decode slot.

Pending work is a queue of ``(request, sample_index)`` items in request order. Whenever slots
are free, the scheduler hands out the next items, grouped by request so that each group
costs one prefill whose state is copied into all of the group's slots. By default a request
starts only when all its pending samples fit into the free slots (one prefill per request), unless
waiting would idle too much: a request with more samples than there are slots, or one that finds at
least half of the slots free, starts with what is free and continues later with another prefill of
the same prompt. With ``split=True`` a request always starts with what is free (the slots never
idle, but refills cost more prefills).

:func:`plan_prefills` then batches the prompts of one round of assignments: prompts of equal
(or, within a padding budget, similar) length share one forward.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Assignment:
    """One prefill: request ``request`` starts samples ``sample_indices`` in ``slots`` (same order)."""

    request: int
    slots: tuple[int, ...]
    sample_indices: tuple[int, ...]


class SlotScheduler:
    """Tracks free slots and pending work items; never starts an item twice."""

    def __init__(self, num_slots: int, samples_per_request: Iterable[tuple[int, Iterable[int]]],
                 split: bool = False):
        """``samples_per_request``: ``(request index, sample indices to run)`` pairs, in order; ``split``:
        start a request before all its pending samples fit (see the module docstring)."""
        if num_slots < 1:
            raise ValueError("num_slots must be >= 1")
        self.num_slots = num_slots
        self.pending: deque[tuple[int, int]] = deque(
            (request, sample) for request, samples in samples_per_request for sample in samples
        )
        self.free: list[int] = list(range(num_slots))
        self.running: dict[int, tuple[int, int]] = {}  # slot -> (request, sample index)
        self.split = split
        self._left: dict[int, int] = {}  # request -> its pending items
        for request, _ in self.pending:
            self._left[request] = self._left.get(request, 0) + 1

    @property
    def idle(self) -> bool:
        """True when nothing is pending and no slot is running."""
        return not self.pending and not self.running

    def assign(self) -> list[Assignment]:
        """Fill free slots (lowest first) with pending items; one :class:`Assignment` per request group."""
        self.free.sort()
        groups: list[Assignment] = []
        slots: list[int] = []
        samples: list[int] = []
        current: int | None = None
        while self.free and self.pending:
            request, sample = self.pending[0]
            if request != current and not self._fits(request):
                break
            if current is not None and request != current:
                groups.append(Assignment(current, tuple(slots), tuple(samples)))
                slots, samples = [], []
            self.pending.popleft()
            self._left[request] -= 1
            slot = self.free.pop(0)
            self.running[slot] = (request, sample)
            current = request
            slots.append(slot)
            samples.append(sample)
        if slots:
            groups.append(Assignment(current, tuple(slots), tuple(samples)))  # type: ignore[arg-type]
        return groups

    def _fits(self, request: int) -> bool:
        """Whether ``request`` (next in the queue) may start now."""
        left, free = self._left[request], len(self.free)
        return self.split or left <= free or left > self.num_slots or 2 * free >= self.num_slots

    def release(self, slot: int) -> tuple[int, int]:
        """Mark ``slot`` finished; returns the ``(request, sample index)`` it was running."""
        item = self.running.pop(slot)
        self.free.append(slot)
        return item


def plan_prefills(lengths: Sequence[int], max_tokens: int, max_padding: float = 0.0) -> list[list[int]]:
    """Split prompts into batched prefills: groups of indices into ``lengths`` (prompt lengths, tokens).

    A group runs as one forward over ``len(group) x max(length)`` tokens, shorter prompts left-padded.
    Prompts are taken shortest first (ties in input order) and a group is closed when the next prompt
    would make it exceed ``max_tokens`` padded tokens (a single longer prompt still gets its own group)
    or make padding more than ``max_padding`` (a fraction in ``[0, 1)``) of its padded tokens.
    ``max_padding=0`` groups prompts of exactly equal length only.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0  # prompt tokens in ``current``
    for i in sorted(range(len(lengths)), key=lambda j: lengths[j]):
        n = lengths[i]
        padded = (len(current) + 1) * n  # n is the longest so far: prompts come shortest first
        if current and (padded > max_tokens or padded - (real + n) > max_padding * padded):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += n
    if current:
        groups.append(current)
    return groups
