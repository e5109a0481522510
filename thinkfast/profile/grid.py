"""The batch x length grid: parsing ``--batch`` / ``--seqlen`` values and splitting lengths.

Sizes are written as integers with an optional binary suffix (``8k`` = 8192, ``32k`` = 32768,
``1m`` = 1048576) and lists as comma-separated sizes (``1,8,64,512``). Memory amounts take
``K/M/G/T`` with ``iB`` (powers of 1024, a bare ``G`` too) or ``B`` (powers of 1000):
``80G`` = ``80GiB`` = 85899345920 bytes, ``80GB`` = 80000000000 bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from thinkfast.errors import RecipeError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kKmMgGtT])(i?[bB])?|([bB]))?\s*$")
_MEMORY_PREFIX = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str | int, what: str = "size") -> int:
    """``"8k"`` -> 8192, ``"512"`` -> 512; :class:`ValueError` naming ``what`` otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"{what} {text!r} is not a size; write an integer, optionally with k (x1024) or m, "
                         f"e.g. 512, 8k, 32k")
    number, suffix = match.groups()
    value = float(number) * _SIZE_FACTORS[suffix.lower()]
    if value != int(value):
        raise ValueError(f"{what} {text!r} is not a whole number of tokens")
    return int(value)


def parse_sizes(text: str | int | list, what: str = "size", minimum: int = 1) -> list[int]:
    """``"1,8,64,512"`` / ``"8k"`` / ``[1, "2k"]`` -> sorted distinct sizes, each at least ``minimum``."""
    items = text if isinstance(text, list) else [p for p in str(text).split(",") if p.strip()]
    if not items:
        raise ValueError(f"{what} {text!r} is empty; give one or more sizes, e.g. 1,8,64,512")
    values = [parse_size(item, what) for item in items]
    for value in values:
        if value < minimum:
            raise ValueError(f"{what} {value} is below the minimum {minimum}")
    return sorted(set(values))


def parse_memory(text: str | int | float) -> int:
    """``"80G"`` / ``"80GiB"`` -> 80 * 2**30 bytes, ``"80GB"`` -> 80e9 bytes, ``"1000"`` -> 1000 bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    match = _MEMORY_RE.match(str(text))
    if not match:
        raise ValueError(f"memory amount {text!r} is not understood; write e.g. 80G (GiB), 80GB (10^9 bytes) "
                         f"or a number of bytes")
    number, prefix, unit, _bare_b = match.groups()
    if prefix is None:
        return int(float(number))
    base = 1000 if unit is not None and unit.lower() == "b" else 1024
    return int(float(number) * base ** _MEMORY_PREFIX[prefix.lower()])


def format_bytes(n: int) -> str:
    """Bytes for a reader: ``12.34 GiB`` from 0.01 GiB up, below that MiB, KiB or bytes (never ``0.00 GiB``)."""
    if n >= 0.01 * 2**30:
        return f"{n / 2**30:.2f} GiB"
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Cell:
    """One point of the grid: ``batch`` sequences of ``prompt_len + gen_len = seqlen`` tokens each."""

    batch: int
    seqlen: int
    prompt_len: int
    gen_len: int


def split_length(seqlen: int, prompt_len: int = 0, gen_len: int = 0) -> tuple[int, int]:
    """(prompt, generated) tokens for a total ``seqlen``.

    Zero means "not given": with only one of ``prompt_len`` / ``gen_len`` given the other is the
    rest of ``seqlen``; with neither, the prompt is a quarter of ``seqlen`` (at least 1 token).
    """
    if prompt_len and gen_len:
        if prompt_len + gen_len != seqlen:
            raise ValueError(f"prompt_len {prompt_len} + gen_len {gen_len} != seqlen {seqlen}")
        return prompt_len, gen_len
    if prompt_len:
        prompt = prompt_len
    elif gen_len:
        prompt = seqlen - gen_len
    else:
        prompt = max(1, seqlen // 4)
    if not 1 <= prompt < seqlen:
        raise ValueError(f"seqlen {seqlen} leaves no room for prompt_len {prompt} and at least one generated token")
    return prompt, seqlen - prompt


def build_grid(batches: list[int], seqlens: list[int], prompt_len: int = 0, gen_len: int = 0,
               source: str = "<command line>") -> list[Cell]:
    """Every (seqlen, batch) cell, lengths outer, batches inner, both ascending.

    Raises :class:`RecipeError` naming ``profile.prompt_len`` / ``profile.gen_len`` (the flags
    ``--prompt-len`` / ``--gen-len``) when a length cannot be split as asked.
    """
    cells = []
    problems = []
    for seqlen in sorted(set(seqlens)):
        try:
            prompt, gen = split_length(seqlen, prompt_len, gen_len)
        except ValueError as exc:
            problems.append(f"{source}: profile.prompt_len/gen_len (--prompt-len/--gen-len): {exc}; "
                            f"give lengths that add up to each --seqlen, or only one of the two")
            continue
        cells.extend(Cell(batch, seqlen, prompt, gen) for batch in sorted(set(batches)))
    if problems:
        raise RecipeError(problems)
    return cells
