"""``synthetic-arith``: procedurally generated multi-step arithmetic word problems (offline default).

Each problem is a short story: a person starts with some items, then a number of steps each
add, take away, multiply or divide them (always staying a positive integer, divisions exact),
and the question asks how many they have at the end. The solution works through the steps
one line each; the answer is the exact integer, written GSM8K-style (``#### N``).

Generation is a seeded stream per split. Splits are disjoint by construction: a problem
belongs to ``train`` or ``test`` by one bit of a hash of its question, and each split's stream
keeps only its own problems.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from thinkfast.config.common import DataSpec
from thinkfast.config.fields import option
from thinkfast.data.answers import INSTRUCTIONS
from thinkfast.data.base import DatasetPlugin, Problem
from thinkfast.errors import DataError

OPERATIONS = ("+", "-", "*", "/")
SPLITS = ("train", "test")
NAMES = ("Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Liam",
         "Mei", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq")
ITEMS = ("apples", "marbles", "stickers", "books", "coins", "pencils", "cookies", "stamps", "shells", "cards")
_STORY = {
    "+": ("{name} buys {n} more {noun}.", "{name} finds {n} more {noun}.", "A friend gives {name} {n} more {noun}."),
    "-": ("{name} gives {count} to a neighbour.", "{name} loses {count}.", "{name} sells {count}."),
    "*": ("{name} collects more until there are {n} times as many {item} as before.",),
    "/": ("{name} splits the {item} into {n} equal piles and keeps one pile.",),
}
_WORKING = {
    "+": "{v} + {n} = {r}, so {name} has {result}.",
    "-": "{v} - {n} = {r}, so {name} has {result}.",
    "*": "{v} * {n} = {r}, so {name} has {result}.",
    "/": "{v} / {n} = {r}, so {name} keeps {result}.",
}


def _noun(n: int, item: str) -> str:
    """``item`` in singular for one (every item name is a regular plural)."""
    return item[:-1] if n == 1 else item


def _count(n: int, item: str) -> str:
    """``"1 apple"``, ``"3 apples"``."""
    return f"{n} {_noun(n, item)}"


@dataclass
class SyntheticArithOptions:
    seed: int = option(0, "Seed of the generator; each split has its own stream from it.", min=0)
    min_steps: int = option(2, "Fewest operations per problem.", min=1, max=32)
    max_steps: int = option(4, "Most operations per problem.", min=1, max=32)
    max_operand: int = option(20, "Largest number an operation uses (and largest starting amount).", min=2)
    max_value: int = option(1000, "Largest intermediate or final amount.", min=10)
    operations: list[str] = option(list(OPERATIONS), "Operations to draw from: any of '+', '-', '*', '/'.")
    train_size: int = option(100_000, "Problems in the train split.", min=1)
    test_size: int = option(1000, "Problems in the test split.", min=1)

    def check(self) -> list[tuple[str, str]]:
        problems = [("operations", f"{op!r} is not one of {', '.join(OPERATIONS)}")
                    for op in self.operations if op not in OPERATIONS]
        if not self.operations:
            problems.append(("operations", "empty: list at least one of '+', '-', '*', '/'"))
        if self.min_steps > self.max_steps:
            problems.append(("min_steps", f"{self.min_steps} is above max_steps {self.max_steps}"))
        return problems


def _split_of(question: str) -> str:
    """The split a question belongs to: one bit of its SHA-256."""
    return SPLITS[hashlib.sha256(question.encode()).digest()[0] & 1]


class SyntheticArith(DatasetPlugin):
    """Seeded multi-step arithmetic word problems with worked solutions and exact integer answers."""

    Options = SyntheticArithOptions
    answer_format = "gsm8k"
    instruction = INSTRUCTIONS["gsm8k"]

    def _operation(self, rng: random.Random, value: int) -> tuple[str, int] | None:
        """A feasible (operation, operand) for the current ``value``, or None if no allowed one fits."""
        o = self.options
        ops = [op for op in OPERATIONS if op in o.operations]
        rng.shuffle(ops)
        for op in ops:
            if op == "+" and value + 1 <= o.max_value:
                return op, rng.randint(1, min(o.max_operand, o.max_value - value))
            if op == "-" and value >= 2:
                return op, rng.randint(1, min(o.max_operand, value - 1))
            if op == "*" and value * 2 <= o.max_value:
                return op, rng.randint(2, min(o.max_operand, o.max_value // value))
            if op == "/":
                divisors = [d for d in range(2, min(o.max_operand, value) + 1) if value % d == 0]
                if divisors:
                    return op, rng.choice(divisors)
        return None

    def _attempt(self, rng: random.Random) -> tuple[str, str, int, list[str]] | None:
        """One problem (question, solution, answer, operations) or None when the draw got stuck."""
        o = self.options
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        value = rng.randint(2, o.max_operand)
        story, working, ops = [f"{name} has {_count(value, item)}."], [], []
        for _ in range(rng.randint(o.min_steps, o.max_steps)):
            step = self._operation(rng, value)
            if step is None:
                return None
            op, n = step
            result = {"+": value + n, "-": value - n, "*": value * n, "/": value // n}[op]
            story.append(rng.choice(_STORY[op]).format(name=name, n=n, item=item, noun=_noun(n, item),
                                                         count=_count(n, item)))
            working.append(_WORKING[op].format(v=value, n=n, r=result, name=name, result=_count(result, item)))
            ops.append(op)
            value = result
        question = " ".join(story) + f" How many {item} does {name} have now?"
        return question, "\n".join(working), value, ops

    def generate(self, split: str) -> Iterator[Problem]:
        """The endless stream of ``split``'s problems (``read`` cuts it to the split's size)."""
        rng = random.Random(f"synthetic-arith/{self.options.seed}/{split}")
        index, failures = 0, 0
        while True:
            drawn = self._attempt(rng)
            if drawn is None or _split_of(drawn[0]) != split:
                failures += drawn is None
                if failures > 10_000 and index == 0:
                    raise DataError("synthetic-arith cannot build problems with these options: allow more "
                                    "data.options.operations or raise max_operand / max_value")
                continue
            question, solution, answer, ops = drawn
            yield Problem(f"arith-{split}-{index}", question, str(answer), solution,
                          {"steps": len(ops), "operations": ops})
            index += 1

    def read(self, spec: DataSpec) -> Iterator[Problem]:
        if spec.path:
            raise DataError("synthetic-arith generates its problems and reads no files: remove data.path, or "
                            "use the 'jsonl' dataset to read a file")
        if spec.split not in SPLITS:
            raise DataError(f"synthetic-arith has splits {', '.join(SPLITS)}, not {spec.split!r}")
        size = self.options.train_size if spec.split == "train" else self.options.test_size
        return itertools.islice(self.generate(spec.split), size)
