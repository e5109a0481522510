"""Grading: equivalence in worker processes with a hard timeout, answer classes, the grade cache."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from thinkfast.evaluate import grading
from thinkfast.evaluate.equivalence import EquivalencePool
from thinkfast.evaluate.grading import GradeCache, Grader, quick_equal
from thinkfast.evaluate.runs import ProblemSamples
from thinkfast.registry import get_registry


def _extract(dataset: str, text: str) -> str | None:
    return get_registry().get("datasets", dataset)().extract_answer(text)


def _problem(texts: list[str], reference: str, dataset: str = "math500", pid: str = "p0") -> ProblemSamples:
    return ProblemSamples(problem_id=pid, dataset=dataset, reference=reference, question="q", texts=texts,
                          num_tokens=[10] * len(texts), finish_reasons=["eos"] * len(texts))


@pytest.fixture(scope="module")
def pool():
    with EquivalencePool(workers=2, timeout=2.0) as p:
        yield p


def test_quick_equal_handles_plain_numbers_only():
    assert quick_equal("1,000", "1000.0") is True
    assert quick_equal("$72$", "72.") is True
    assert quick_equal("72", "73") is False
    assert quick_equal("\\frac{1}{2}", "0.5") is None  # needs math-verify


def test_pool_compares_with_math_verify_and_survives_garbage(pool):
    results = pool.check([("\\frac{1}{2}", "0.5"), ("x+1", "1+x"), ("3", "\\sqrt{9}"), ("3", "4"),
                          ("1", "}}{{\\frac{ \\left( $$ \x00"), ("", "")])
    assert [r.equal for r in results] == [True, True, True, False, False, True]
    assert all(r.status in ("ok", "error") for r in results)


def test_hanging_check_finishes_as_wrong_within_its_timeout():
    with EquivalencePool(workers=1, timeout=1.0) as pool:
        pool.check([("1", "1.0")])  # worker started and warm
        start = time.monotonic()
        results = pool.check([("5", "$9^{9^{9^{9}}}$"), ("2", "2.0")])
        elapsed = time.monotonic() - start
    assert results[0].equal is False and results[0].status == "timeout"
    assert results[1].equal is True  # the pool went on with the next check
    assert elapsed < 1.0 + 1.5


def test_majority_classes_merge_equivalent_spellings(pool):
    texts = ["so \\boxed{0.5}", "so \\boxed{1/2}", "so \\boxed{\\frac{1}{2}}", "so \\boxed{3}", "so \\boxed{3}",
             "no answer here"]
    (graded,) = Grader(_extract, pool).grade([_problem(texts, reference="7")])
    assert graded.answers[-1] is None and graded.classes[-1] == -1
    assert len(set(graded.classes[:3].tolist())) == 1  # 0.5, 1/2 and \frac{1}{2}: one class
    assert graded.classes[3] == graded.classes[4] != graded.classes[0]
    assert graded.num_classes == 2 and not graded.correct.any()
    assert graded.class_answers[graded.classes[0]] in ("0.5", "1/2", "\\frac{1}{2}")


def test_correct_answers_share_a_class_and_wrong_ones_do_not_join_it(pool):
    texts = ["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{2}", "\\boxed{\\dfrac{2}{4}}"]
    (graded,) = Grader(_extract, pool).grade([_problem(texts, reference="\\frac{1}{2}")])
    assert graded.correct.tolist() == [True, True, False, True]
    assert graded.classes[0] == graded.classes[1] == graded.classes[3] == 0  # the largest class first
    assert graded.class_correct.tolist() == [True, False]


def test_gsm8k_extraction_through_the_dataset_plugin(pool):
    texts = ["12 + 60 = 72\n#### 72", "The answer is $72.00.", "she made 70\n#### 70", "####"]
    (graded,) = Grader(_extract, pool).grade([_problem(texts, reference="72", dataset="gsm8k")])
    assert graded.correct.tolist() == [True, True, False, False]


def test_grades_are_cached_and_reused(tmp_path, pool):
    cache_path = tmp_path / "grades.jsonl"
    problems = [_problem(["\\boxed{\\frac{1}{2}}", "\\boxed{\\sqrt{4}}", "\\boxed{x^2}"], reference="0.5")]
    first = Grader(_extract, pool, GradeCache(cache_path))
    first.grade(problems)
    lines = [json.loads(line) for line in cache_path.read_text().splitlines()]
    assert {(r["gold"], r["pred"]) for r in lines} >= {("0.5", "\\frac{1}{2}"), ("0.5", "x^2")}
    assert all(r["dataset"] == "math500" for r in lines)
    second = Grader(_extract, EquivalencePool(workers=1, timeout=0.1), GradeCache(cache_path))
    (graded,) = second.grade(problems)  # a pool this slow would fail: every verdict comes from the cache
    assert graded.correct.tolist() == [True, False, False]
    assert second.counts["cached"] == len(lines) and "ok" not in second.counts


def test_a_verdict_added_after_a_killed_run_is_not_glued_onto_its_cut_line(tmp_path):
    """evaluate killed while appending left half a line in grades.jsonl; the next run appended its first verdict
    onto it, so that verdict was unreadable (checked again, and appended again, on every later run)."""
    from thinkfast.evaluate.equivalence import Check

    cache_path = tmp_path / "grades.jsonl"
    GradeCache(cache_path).add({("gsm8k", "1", "1"): Check(True, "quick")})
    with cache_path.open("a") as fh:
        fh.write('{"dataset": "gsm8k", "gold": "2", "pr')
    GradeCache(cache_path).add({("gsm8k", "3", "4"): Check(False, "ok")})
    assert set(GradeCache(cache_path).verdicts) == {("gsm8k", "1", "1"), ("gsm8k", "3", "4")}


def test_extractor_errors_count_as_no_answer(pool):
    def broken(dataset: str, text: str) -> str | None:
        raise RuntimeError("boom")

    (graded,) = Grader(broken, pool).grade([_problem(["a", "b"], reference="1")])
    assert graded.classes.tolist() == [-1, -1] and not graded.correct.any()


def test_a_worker_ignores_ctrl_c_and_keeps_answering():
    """Ctrl-C reaches every process of the terminal's foreground group: a worker must not die of it
    (with a traceback); the parent stops and shuts the pool down."""
    with EquivalencePool(workers=1, timeout=5.0) as pool:
        assert pool.check([("\\frac{1}{2}", "0.5")])[0].equal  # the worker is up
        os.kill(pool._slots[0].process.pid, signal.SIGINT)
        time.sleep(0.3)
        assert pool._slots[0].process.is_alive()
        assert [r.equal for r in pool.check([("\\sqrt{4}", "2"), ("3", "\\pi")])] == [True, False]
        assert pool.killed == 0


def test_progress_counts_a_problems_samples_once_its_last_check_is_answered(pool):
    """on_graded gets each problem's sample count exactly once, after its checks; in total every sample."""
    problems = [_problem(["\\boxed{0.5}", "\\boxed{1/2}", "\\boxed{3}", "\\boxed{4}", "none"], "7", pid="pairs"),
                _problem(["\\boxed{\\frac{1}{2}}", "\\boxed{2}"], "0.5", pid="one wrong answer"),
                _problem(["no answer", "at all", "here"], "1", pid="nothing to check")]
    seen: list[int] = []
    graded = Grader(_extract, pool, on_graded=seen.append).grade(problems)
    assert seen == [3, 2, 5] and len(graded) == 3  # no checks; after the reference checks; after the pairs


def test_problems_are_graded_in_chunks_with_the_same_result(pool, monkeypatch):
    problems = [_problem([f"\\boxed{{{a}}}" for a in ("0.5", "1/2", "3", f"{i}")], "0.5", pid=f"p{i}")
                for i in range(5)]
    whole = Grader(_extract, pool).grade(problems)
    monkeypatch.setattr(grading, "CHUNK", 2)
    calls = []
    check = pool.check

    def counted(pairs, on_result=None):
        calls.append(len(pairs))
        return check(pairs, on_result)

    monkeypatch.setattr(pool, "check", counted)
    chunked = Grader(_extract, pool).grade(problems)
    assert len(calls) == 2 * 3  # two rounds in each of three chunks
    for a, b in zip(whole, chunked, strict=True):
        assert a.classes.tolist() == b.classes.tolist() and a.correct.tolist() == b.correct.tolist()


def test_a_dead_worker_is_an_error_verdict_and_is_replaced():
    """A worker that died before its task was sent (its pipe broken) gives that task an "error" verdict,
    not a BrokenPipeError; a new worker takes the rest."""
    with EquivalencePool(workers=1, timeout=5.0) as pool:
        assert pool.check([("1", "1")])[0].equal  # the worker is up
        dead = pool._slots[0]
        dead.process.kill()
        dead.process.join()
        checks = pool.check([("\\sqrt{4}", "2"), ("3", "3")])
        assert checks[0].status == "error" and not checks[0].equal
        assert checks[1].equal and pool.killed == 1
