"""Grading: extract each sample's answer, decide correctness and answer classes, cache the verdicts.

For every problem:

1. the dataset plugin's ``extract_answer(text)`` pulls out each sample's final answer;
2. each distinct answer is compared with the reference, ``verify(gold, pred)`` in that order
   (:mod:`thinkfast.evaluate.equivalence`; plain numbers are compared exactly without math-verify);
3. answers are merged into equivalence classes: two correct answers are one class, a correct and
   a wrong one are not, and pairs of wrong answers are checked with the same equivalence test
   (so ``0.5``, ``1/2`` and ``\\frac{1}{2}`` vote together even when the reference is ``3``).

Every verdict is appended to ``grades.jsonl`` in the output directory, keyed by dataset, the two
answers and their order (those of step 2's fast path too, so the file exists and lists every
answer graded); a rerun reads it back and only checks what is new.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from thinkfast.data.files import repair_cut_end
from thinkfast.errors import ThinkfastError
from thinkfast.evaluate.equivalence import Check, EquivalencePool, normalize_text
from thinkfast.evaluate.graded import GradedProblem
from thinkfast.evaluate.runs import ProblemSamples

#: ``extract(dataset_name, text) -> answer or None``.
Extractor = Callable[[str, str], "str | None"]

_PLAIN_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def _plain_number(text: str) -> Decimal | None:
    s = normalize_text(text)
    if not _PLAIN_NUMBER.fullmatch(s):
        return None
    try:
        return Decimal(s.replace(",", ""))
    except InvalidOperation:
        return None


def quick_equal(gold: str, pred: str) -> bool | None:
    """Decide without math-verify when possible: equal text, or two plain decimal numbers; else None."""
    if normalize_text(gold) == normalize_text(pred):
        return True
    a, b = _plain_number(gold), _plain_number(pred)
    if a is not None and b is not None:
        return a == b
    return None


class GradeCache:
    """Append-only JSONL cache of equivalence verdicts: ``{"dataset", "gold", "pred", "equal", "status"}``.

    ``status`` is ``quick`` for a verdict of :func:`quick_equal` (kept so that the file lists every
    answer graded, math-verify needed or not), else the pool's (``ok``, ``timeout``, ``error``).
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.verdicts: dict[tuple[str, str, str], Check] = {}
        if path is not None and path.is_file():
            repair_cut_end(path)  # so that the first verdict added is not glued onto a line a killed run left
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        r = json.loads(line)
                        self.verdicts[(r["dataset"], r["gold"], r["pred"])] = Check(bool(r["equal"]), r["status"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by an interrupted run: check that pair again

    def get(self, key: tuple[str, str, str]) -> Check | None:
        return self.verdicts.get(key)

    def add(self, items: dict[tuple[str, str, str], Check]) -> None:
        """Remember ``items`` and append them to the file (created even when there is nothing to add)."""
        self.verdicts.update(items)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for (dataset, gold, pred), check in items.items():
                fh.write(json.dumps({"dataset": dataset, "gold": gold, "pred": pred,
                                     "equal": check.equal, "status": check.status}) + "\n")


class _UnionFind:
    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


Key = tuple[str, str, str]  # (dataset, gold, pred)

#: Problems graded together: their checks run as one batch in the pool (per round).
CHUNK = 64


class _Countdown:
    """Calls ``done(i)`` once every key that problem ``i`` waits on has been answered (at once if none)."""

    def __init__(self, keys: dict[int, set[Key]], done: Callable[[int], None]):
        self.left = {i: len(k) for i, k in keys.items()}
        self.waiting: dict[Key, list[int]] = {}
        for i, problem_keys in keys.items():
            for key in problem_keys:
                self.waiting.setdefault(key, []).append(i)
        self.done = done
        for i, left in self.left.items():
            if not left:
                done(i)

    def answered(self, key: Key) -> None:
        for i in self.waiting.pop(key, ()):
            self.left[i] -= 1
            if not self.left[i]:
                self.done(i)


def _reason(exc: Exception) -> str:
    """An extraction failure in words: a :class:`ThinkfastError`'s own message (a guarded plugin's names it)."""
    return str(exc) if isinstance(exc, ThinkfastError) else f"{type(exc).__name__}: {exc}"


class Grader:
    """Grades problems with an answer extractor, an :class:`EquivalencePool` and a :class:`GradeCache`.

    ``on_graded(samples)`` (optional) is called as problems' grades become final, with the number
    of samples of those problems (progress display).
    """

    def __init__(self, extract: Extractor, pool: EquivalencePool, cache: GradeCache | None = None,
                 on_graded: Callable[[int], None] | None = None):
        self.extract = extract
        self.pool = pool
        self.cache = cache if cache is not None else GradeCache(None)
        self.on_graded = on_graded or (lambda samples: None)
        self.counts: Counter[str] = Counter()  # verdict sources: quick, cached, and pool statuses
        self.extract_failures: dict[str, list] = {}  # dataset -> [samples whose extraction raised, first reason]

    def _resolve(self, keys: set[Key], on_answer: Callable[[Key, Check], None]) -> dict[Key, Check]:
        """Verdicts for ``(dataset, gold, pred)`` keys: fast path, cache, then the pool;
        ``on_answer(key, verdict)`` as each arrives."""
        out: dict[Key, Check] = {}
        todo = []
        for key in keys:
            quick = quick_equal(key[1], key[2])
            cached = self.cache.get(key)
            if quick is not None:
                out[key] = Check(quick, "quick")
                self.counts["quick"] += 1
            elif cached is not None:
                out[key] = cached
                self.counts["cached"] += 1
            else:
                todo.append(key)
        self.cache.add({key: check for key, check in out.items() if check.status == "quick" and key not in
                        self.cache.verdicts})  # recorded once, though never read back: quick_equal is cheaper
        for key, check in out.items():
            on_answer(key, check)
        todo.sort()
        checks = self.pool.check([(gold, pred) for _, gold, pred in todo],
                                 on_result=lambda i, check: on_answer(todo[i], check))
        fresh = dict(zip(todo, checks, strict=True))
        self.counts.update(check.status for check in fresh.values())
        self.cache.add(fresh)
        out.update(fresh)
        return out

    def grade(self, problems: list[ProblemSamples]) -> list[GradedProblem]:
        """Grade every problem, :data:`CHUNK` problems at a time (so progress and the cache file move
        steadily through a long run)."""
        return [graded for start in range(0, len(problems), CHUNK)
                for graded in self._grade_chunk(problems[start:start + CHUNK])]

    def _grade_chunk(self, problems: list[ProblemSamples]) -> list[GradedProblem]:
        """Two batched rounds of checks (vs reference, then wrong vs wrong).

        A problem's samples count as graded (``on_graded``) as soon as its last check is answered:
        after its reference checks if it has fewer than two distinct wrong answers, else after the
        checks between those.
        """
        extracted = [[self._safe_extract(p.dataset, t) for t in p.texts] for p in problems]
        distinct = [sorted({a for a in answers if a is not None}) for answers in extracted]
        verdicts: dict[Key, Check] = {}
        pair_keys: dict[int, set[Key]] = {}

        def references_answered(i: int) -> None:
            p = problems[i]
            wrong = [a for a in distinct[i] if not verdicts[(p.dataset, p.reference, a)].equal]
            pair_keys[i] = {(p.dataset, a, b) for j, a in enumerate(wrong) for b in wrong[j + 1:]}
            if not pair_keys[i]:
                self.on_graded(len(p.texts))

        def reference_answer(key: Key, check: Check) -> None:
            verdicts[key] = check
            after_references.answered(key)

        ref_keys = {i: {(p.dataset, p.reference, a) for a in distinct[i]} for i, p in enumerate(problems)}
        after_references = _Countdown(ref_keys, references_answered)
        ref = self._resolve(set().union(*ref_keys.values()), reference_answer)
        after_pairs = _Countdown({i: keys for i, keys in pair_keys.items() if keys},
                                 lambda i: self.on_graded(len(problems[i].texts)))
        pairs = self._resolve(set().union(*pair_keys.values()), lambda key, check: after_pairs.answered(key))
        return [self._assemble(p, answers, names, ref, pairs)
                for p, answers, names in zip(problems, extracted, distinct, strict=True)]

    def _safe_extract(self, dataset: str, text: str) -> str | None:
        try:
            answer = self.extract(dataset, text)
        except Exception as exc:  # garbage text must not take the run down; extraction_warnings tells of it
            self.counts["extract_error"] += 1
            failed = self.extract_failures.setdefault(dataset, [0, _reason(exc)])
            failed[0] += 1
            return None
        return answer if answer is None or answer.strip() else None

    def extraction_warnings(self) -> list[str]:
        """One line per dataset whose extraction raised: how many samples, and the first reason (for a plugin,
        :mod:`thinkfast.data.guard` names it and the line of its code)."""
        return [f"extracting the answers of dataset {dataset!r} failed on {count} sample(s), which count as "
                f"unanswered; the first failure: {reason}"
                for dataset, (count, reason) in sorted(self.extract_failures.items())]

    @staticmethod
    def _assemble(p: ProblemSamples, answers: list[str | None], names: list[str],
                  ref: dict[tuple[str, str, str], Check], pairs: dict[tuple[str, str, str], Check]) -> GradedProblem:
        is_correct = [ref[(p.dataset, p.reference, a)].equal for a in names]
        uf = _UnionFind(len(names))
        correct_ids = [i for i, c in enumerate(is_correct) if c]
        for i in correct_ids[1:]:
            uf.union(correct_ids[0], i)
        for i, a in enumerate(names):
            for j in range(i + 1, len(names)):
                if not is_correct[i] and not is_correct[j] and pairs[(p.dataset, a, names[j])].equal:
                    uf.union(i, j)
        frequency = Counter(a for a in answers if a is not None)
        roots = sorted({uf.find(i) for i in range(len(names))},
                       key=lambda r: -sum(frequency[names[i]] for i in range(len(names)) if uf.find(i) == r))
        class_of_root = {r: c for c, r in enumerate(roots)}
        class_of_name = {a: class_of_root[uf.find(i)] for i, a in enumerate(names)}
        class_answers = [""] * len(roots)
        for c in range(len(roots)):
            members = [a for a in names if class_of_name[a] == c]
            class_answers[c] = max(members, key=lambda a: (frequency[a], -len(a)))
        classes = np.array([class_of_name[a] if a is not None else -1 for a in answers], dtype=np.int64)
        class_correct = np.zeros(len(roots), dtype=bool)
        for a, c in class_of_name.items():
            class_correct[c] |= is_correct[names.index(a)]
        correct = np.append(class_correct, False)[classes] if len(answers) else np.zeros(0, dtype=bool)
        return GradedProblem(
            problem_id=p.problem_id, dataset=p.dataset, reference=p.reference, question=p.question,
            texts=list(p.texts), answers=answers, classes=classes, correct=correct,
            class_answers=class_answers, class_correct=class_correct,
            num_tokens=np.asarray(p.num_tokens, dtype=np.int64), dataset_options=dict(p.dataset_options),
        )
