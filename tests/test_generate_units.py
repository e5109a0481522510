"""Pieces of `generate` that need no model: slot scheduling, stop strings, output files and resume."""

from __future__ import annotations

import json
import re

import pytest

from thinkfast.errors import DataError, ThinkfastError
from thinkfast.generate.output import (
    SampleRecord,
    SampleWriter,
    check_settings,
    merge_samples,
    problem_seconds,
    read_done,
    shard_name,
    write_json,
)
from thinkfast.generate.runner import answer_stop_format, stop_token_ids
from thinkfast.generate.scheduler import SlotScheduler
from thinkfast.generate.stops import SlotMemory, StopChecker, cut_at_stop

# ---------------------------------------------------------------- scheduler


def test_scheduler_starts_a_request_when_all_its_samples_fit_unless_told_to_split():
    work = [(0, range(5)), (1, range(5)), (2, range(12))]
    sched = SlotScheduler(8, work)
    assert [(a.request, a.slots) for a in sched.assign()] == [(0, (0, 1, 2, 3, 4))]  # request 1 waits: 5 > 3 free
    assert sched.assign() == []
    sched.release(4)
    # with half the slots free it starts with what is free, its last sample in a later prefill
    assert [(a.request, a.slots, a.sample_indices) for a in sched.assign()] == [(1, (4, 5, 6, 7), (0, 1, 2, 3))]
    for slot in range(8):
        sched.release(slot)
    assert [(a.request, a.sample_indices) for a in sched.assign()] == [(1, (4,)), (2, tuple(range(7)))]
    for slot in range(8):
        sched.release(slot)
    assert [(a.request, a.sample_indices) for a in sched.assign()] == [(2, tuple(range(7, 12)))]

    split = SlotScheduler(8, work, split=True)
    assert [(a.request, a.slots) for a in split.assign()] == [(0, (0, 1, 2, 3, 4)), (1, (5, 6, 7))]


def test_splitting_scheduler_groups_by_request_and_refills():
    sched = SlotScheduler(4, [(0, range(3)), (1, range(3)), (2, [1])], split=True)
    first = sched.assign()
    assert [(a.request, a.slots, a.sample_indices) for a in first] == [(0, (0, 1, 2), (0, 1, 2)), (1, (3,), (0,))]
    assert sched.assign() == []  # nothing free
    assert sched.release(1) == (0, 1)
    assert sched.release(3) == (1, 0)
    again = sched.assign()
    # request 1 continues in a new group (a second prefill of the same prompt)
    assert [(a.request, a.slots, a.sample_indices) for a in again] == [(1, (1, 3), (1, 2))]
    for slot in (0, 1, 2, 3):
        sched.release(slot)
    assert [(a.request, a.slots, a.sample_indices) for a in sched.assign()] == [(2, (0,), (1,))]
    assert not sched.idle
    sched.release(0)
    assert sched.idle


@pytest.mark.parametrize("split", [False, True])
def test_scheduler_runs_every_item_exactly_once(split):
    items = [(r, range(r % 4 + 1)) for r in range(10)]
    sched = SlotScheduler(3, items, split=split)
    seen = []
    while not sched.idle:
        sched.assign()
        slot = min(sched.running)  # finish one at a time
        seen.append(sched.release(slot))
    assert sorted(seen) == sorted((r, s) for r, samples in items for s in samples)


# ---------------------------------------------------------------- stop strings


def _decode(tokens):
    """Tokens are code points; 0 is an 'invisible' special token."""
    return "".join(chr(t) for t in tokens if t)


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("abc\n\nQ: x", ["Q:", "\n\n"]) == "abc"
    assert cut_at_stop("abc", ["\n\n"]) is None


def test_stop_checker_finds_the_first_token_completing_a_stop():
    checker = StopChecker(["END"], _decode)
    tokens = [ord(c) for c in "xxENDyyEND"]
    assert checker.first_stop(tokens, 0) == (5, "xx", "stop")
    # already-checked prefix is skipped, but a stop spanning the boundary is still found
    assert checker.first_stop(tokens, 4) == (5, "xx", "stop")
    assert checker.first_stop(tokens[:4], 0) is None
    assert not StopChecker([], _decode)
    assert StopChecker(["", "x"], _decode).stops == ["x"]


def test_stop_checker_window_covers_long_gaps():
    checker = StopChecker(["\n\n"], _decode)
    tokens = [ord("a")] * 100 + [ord("\n"), 0, 0, ord("\n"), ord("b")]
    assert checker.first_stop(tokens, 101) == (104, "a" * 100, "stop")


def _codes(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_stop_checker_answer_rule_ends_at_the_answer_lines_newline():
    checker = StopChecker([], _decode, "gsm8k")
    tokens = _codes("6 * 7 = 42.\n#### 42\n#### 16\n")
    assert checker and checker.first_stop(tokens, 0) == (20, "6 * 7 = 42.\n#### 42", "answer")
    assert checker.first_stop(tokens, 19) == (20, "6 * 7 = 42.\n#### 42", "answer")  # the newline is the new token
    assert checker.first_stop(tokens[:19], 0) is None  # "#### 42" without its newline: "#### 425" may follow
    assert checker.first_stop(_codes("#### Step 2\nx\n"), 0) is None  # a heading is no answer line
    # the answer rule only exists for formats whose extractor reads the first answer
    for fmt in ("math", "plain", None):
        assert not StopChecker([], _decode, fmt)
        assert StopChecker(["\n\n"], _decode, fmt).first_stop(tokens, 0) is None


@pytest.mark.parametrize(("stops", "text", "expected"), [
    (["\n"], "#### 5\n", ("#### 5", "stop")),  # both cut at the same place: "stop"
    (["5"], "#### 5\n", ("#### ", "stop")),  # the stop string comes first
    (["x"], "#### 5\nx", ("#### 5", "answer")),  # the answer line ends first
    (["Q:"], "Q: #### 5\n", ("", "stop")),
    ([], "#### 5\n", ("#### 5", "answer")),
    ([], "#### 5", None),
])
def test_stop_checker_when_both_rules_fire_the_earlier_cut_wins(stops, text, expected):
    assert StopChecker(stops, _decode, "gsm8k").check_text(text) == expected


def test_answer_rule_lookback_counts_characters_not_tokens():
    # "####", 400 invisible tokens (special tokens decode to nothing), then " 5\n": a window of tokens sized for
    # the 64-character line would not reach back to the "####"
    checker = StopChecker([], _decode, "gsm8k")
    tokens = _codes("ab ####") + [0] * 400 + _codes(" 5\n")
    assert checker.first_stop(tokens, len(tokens) - 1) == (len(tokens), "ab #### 5", "answer")


def test_answer_rule_precheck_decodes_each_token_id_once_and_nothing_without_a_new_newline():
    calls = []

    def decode(tokens):
        calls.append(len(tokens))
        return _decode(tokens)

    checker = StopChecker([], decode, "gsm8k")
    tokens = _codes("#### 5" + "x" * 200)
    assert checker.first_stop(tokens, 190) is None and calls == [1, 1, 1, 1]  # "#", " ", "5", "x" learned
    assert checker.first_stop(tokens + _codes("xx"), len(tokens)) is None and calls == [1, 1, 1, 1]
    # a newline among the new tokens, but no "#" before it: still no decode of the text
    assert checker.first_stop(_codes("x = 5\nx"), 2) is None and calls == [1] * 6  # "=", "\\n" learned


def test_answer_rule_precheck_sees_a_hash_and_newline_in_one_token():
    pieces = {1: "#### 5", 2: "\n", 3: "#\n", 4: "####", 5: " 7"}

    def decode(tokens):
        return "".join(pieces[t] for t in tokens)

    checker = StopChecker([], decode, "gsm8k")
    assert checker.first_stop([1, 2], 1) == (2, "#### 5", "answer")
    assert checker.first_stop([4, 5, 3], 2) == (3, "#### 7#", "answer")


def _first_stop_token_by_token(checker, decode, tokens):
    """The rule itself: the first t whose full decode stops, with its cut text and reason."""
    for t in range(1, len(tokens) + 1):
        found = checker.check_text(decode(tokens[:t]))
        if found is not None:
            return (t, *found)
    return None


def _first_stop_in_chunks(checker, tokens, rng=None, memory=None):
    """As the engine checks: every few tokens (``rng``: 1 to 20; None: every token, as the reference loop),
    only the tokens since the last check (with ``memory``, the engine's per-slot :class:`SlotMemory`)."""
    checked = 0
    while checked < len(tokens):
        n = min(len(tokens), checked + (rng.randint(1, 20) if rng else 1))
        found = checker.first_stop(tokens[:n], checked, memory)
        if found is not None:
            return tuple(found)
        checked = n
    return None


@pytest.mark.parametrize("stops", [[], ["\n\n"], ["Question:", "yy"]])
def test_answer_rule_checked_in_chunks_matches_a_full_decode_per_token(stops, gsm8k_like_texts, smollm_tokenizer):
    """With the real tokenizer (byte-level BPE, special tokens that decode to nothing sprinkled in) and with
    one character per token: the incremental check finds the same token, text and reason as decoding every prefix."""
    import random

    rng = random.Random(1)
    special = smollm_tokenizer.all_special_ids

    def tok_decode(tokens):
        return smollm_tokenizer.decode(list(tokens), skip_special_tokens=True)

    reasons = []
    for text in gsm8k_like_texts(seed=2, count=150):
        tokens = smollm_tokenizer.encode(text, add_special_tokens=False)
        for _ in range(rng.randint(0, 3)):
            tokens.insert(rng.randint(0, len(tokens)), rng.choice(special))
        for decode, ids in ((tok_decode, tokens), (_decode, _codes(text))):
            checker = StopChecker(stops, decode, "gsm8k")
            expected = _first_stop_token_by_token(checker, decode, ids)
            assert _first_stop_in_chunks(checker, ids, rng) == expected, text
            assert _first_stop_in_chunks(checker, ids, rng, SlotMemory()) == expected, text
            assert _first_stop_in_chunks(checker, ids) == expected, text
            reasons.append(expected and expected[2])
    assert reasons.count("answer") > 30 and reasons.count(None) > 30
    if stops:
        assert reasons.count("stop") > 10


# ---------------------------------------------------------------- output files


def _record(pid: str, i: int, seconds: float = 1.0) -> SampleRecord:
    return SampleRecord(pid, i, f"text {pid} {i}", 3, "eos", "42", "gsm8k", seconds)


def test_writer_appends_and_resume_reads_done(tmp_path):
    with SampleWriter(tmp_path / "samples.jsonl") as w:
        w.write(_record("p1", 0))
        w.write(_record("p1", 1, 2.5))
    with SampleWriter(tmp_path / "samples.jsonl") as w:  # re-open appends
        w.write(_record("p2", 0))
    done = read_done(tmp_path)
    assert set(done) == {("p1", 0), ("p1", 1), ("p2", 0)}
    assert done[("p1", 1)]["text"] == "text p1 1"
    assert problem_seconds(done.values()) == {"p1": 3.5, "p2": 1.0}


def test_a_torn_last_line_is_dropped_and_appending_continues(tmp_path):
    path = tmp_path / "samples.jsonl"
    with SampleWriter(path) as w:
        w.write(_record("p1", 0))
    with path.open("a") as fh:
        fh.write('{"problem_id": "p1", "sample_in')  # crash mid-write
    assert set(read_done(tmp_path)) == {("p1", 0)}
    with SampleWriter(path) as w:
        w.write(_record("p1", 1))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["sample_index"] for line in lines] == [0, 1]


_LINE0 = b'{"problem_id": "p1", "sample_index": 0}\n'
_LINE1 = b'{"problem_id": "p1", "sample_index": 1}'


@pytest.mark.parametrize("content, done", [
    (_LINE0 + _LINE1[:25], [0]),  # killed mid-line: the unfinished sample is generated again
    (_LINE0 + '{"problem_id": "p1", "sample_index": 1, "text": "3 \u00d7'.encode()[:-1], [0]),  # mid-character
    (_LINE0 + _LINE1, [0, 1]),  # killed between the object and its newline: a finished sample, kept
    (_LINE0 + b"\n  \n" + _LINE1 + b"\n", [0, 1]),  # blank lines
    (b"\xef\xbb\xbf" + _LINE0 + _LINE1 + b"\n", [0, 1]),  # a byte-order mark (an editor saved the file)
], ids=["cut", "cut-in-a-character", "complete-without-newline", "blank-lines", "bom"])
def test_resume_keeps_every_finished_sample_and_appends_on_a_line_of_its_own(tmp_path, content, done):
    """Before: a last sample complete but for its newline was dropped (and cut from the file), so finished work
    was thrown away; a byte-order mark was 'not valid JSON'."""
    path = tmp_path / "samples.jsonl"
    path.write_bytes(content)
    assert sorted(i for _, i in read_done(tmp_path)) == done
    with SampleWriter(path) as w:
        w.write(_record("p1", 2))
    assert sorted(i for _, i in read_done(tmp_path)) == [*done, 2]
    assert path.read_bytes().endswith(b"\n") and path.read_text(encoding="utf-8-sig").count("{") == len(done) + 1


def test_a_corrupt_middle_line_names_the_file_and_line(tmp_path):
    (tmp_path / "samples.jsonl").write_text('{"problem_id": "a", "sample_index": 0}\nnot json\n')
    with pytest.raises(DataError, match=r"samples.jsonl:2"):
        read_done(tmp_path)


def test_merged_rank_stats_name_the_student_a_rank_loaded():
    """On a resume rank 0 may have nothing left and load no model: the student kind comes from a rank that
    loaded it (run.json said "" for a llamba student before)."""
    from thinkfast.generate.distributed import merge_rank_stats

    def stats(rank, student):
        return {"rank": rank, "device": "cpu", "wall_seconds": 1.0, "generated_tokens": 0, "new_samples": 0,
                "student": student}

    assert merge_rank_stats([stats(0, None), stats(1, "llamba")])["student"] == "llamba"
    assert merge_rank_stats([stats(0, "transformer"), stats(1, "transformer")])["student"] == "transformer"
    assert merge_rank_stats([stats(0, None), stats(1, None)])["student"] is None  # run.json keeps the earlier


def test_a_rank_with_nothing_to_generate_does_not_turn_off_cuda_graphs_and_compile_in_the_summary():
    """--limit 1 on two GPUs, or a resume where one rank's share is done: that rank runs no engine. Before, its
    stats (no cuda_graph/compiled keys) made run.json say cuda_graphs false and compiled false although every
    sample was decoded by a compiled step replayed as a CUDA graph."""
    from thinkfast.generate.distributed import merge_rank_stats

    idle = {"rank": 1, "device": "NVIDIA H100", "wall_seconds": 0.01, "generated_tokens": 0, "new_samples": 0,
            "student": None}
    busy = {**idle, "rank": 0, "wall_seconds": 9.0, "generated_tokens": 900, "new_samples": 8, "student": "llamba",
            "cuda_graph": True, "graph_error": None, "compiled": True, "compile_seconds": 4.0, "compile_error": None}
    merged = merge_rank_stats([busy, idle])
    assert merged["cuda_graph"] is True and merged["compiled"] is True
    eager = merge_rank_stats([{**busy, "cuda_graph": False, "graph_error": "capture failed"}, idle])
    assert eager["cuda_graph"] is False and eager["graph_error"] == "capture failed"
    assert merge_rank_stats([{**idle, "rank": 0}, idle])["cuda_graph"] is False  # no rank ran the engine


def test_merge_unions_shards_in_problem_order(tmp_path):
    with SampleWriter(tmp_path / "samples.jsonl") as w:
        w.write(_record("b", 1))
    for rank, recs in enumerate([[_record("c", 0), _record("b", 0)], [_record("a", 0), _record("b", 1)]]):
        with SampleWriter(tmp_path / shard_name(rank)) as w:
            for r in recs:
                w.write(r)
    assert merge_samples(tmp_path, ["a", "b", "c"]) == 4
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [(r["problem_id"], r["sample_index"]) for r in lines] == [("a", 0), ("b", 0), ("b", 1), ("c", 0)]
    assert not list(tmp_path.glob("samples.rank*"))


def test_resume_refuses_other_settings(tmp_path):
    settings = {"model": "m", "seed": 0, "temperature": 0.8}
    check_settings(tmp_path, settings)  # nothing there yet
    write_json(tmp_path / "run.json", {"settings": settings})
    check_settings(tmp_path, dict(settings))
    with pytest.raises(ThinkfastError, match=r"temperature: 0.8 -> 1.0.*--output-dir"):
        check_settings(tmp_path, {**settings, "temperature": 1.0})


def test_run_json_without_stop_on_special_tokens_resumes_as_the_earlier_behaviour(tmp_path):
    # a run.json written before the option existed: its samples ended only at the model's EOS
    write_json(tmp_path / "run.json", {"settings": {"model": "m", "seed": 0}})
    check_settings(tmp_path, {"model": "m", "seed": 0, "stop_on_special_tokens": False})
    with pytest.raises(ThinkfastError, match=r"stop_on_special_tokens: False -> True.*--output-dir"):
        check_settings(tmp_path, {"model": "m", "seed": 0, "stop_on_special_tokens": True})


def test_run_json_without_stop_at_answer_resumes_as_the_earlier_behaviour(tmp_path):
    # a run.json written before the option existed: its samples ran on past their answer line
    write_json(tmp_path / "run.json", {"settings": {"model": "m", "stop_on_special_tokens": True}})
    check_settings(tmp_path, {"model": "m", "stop_on_special_tokens": True, "stop_at_answer": False})
    with pytest.raises(ThinkfastError, match=r"stop_at_answer: False -> True.*--output-dir"):
        check_settings(tmp_path, {"model": "m", "stop_on_special_tokens": True, "stop_at_answer": True})


def test_the_answer_rule_uses_the_plugins_answer_format_only_with_its_own_extractor():
    from thinkfast.data.base import DatasetPlugin
    from thinkfast.registry import get_registry

    gsm8k = get_registry().get("datasets", "gsm8k")()
    assert answer_stop_format(gsm8k, True) == "gsm8k"
    assert answer_stop_format(gsm8k, False) is None

    class LastHashes(DatasetPlugin):  # reads the last "####" line: cutting after the first would change answers
        answer_format = "gsm8k"

        def extract_answer(self, text):
            return text.rsplit("####", 1)[-1].strip() or None

    assert answer_stop_format(LastHashes(), True) is None


# ---------------------------------------------------------------- ids that end a sample


def _model_and_tokenizer(eos_token_ids, eos_token_id, special_ids, vocab_size=100):
    from types import SimpleNamespace

    model = SimpleNamespace(config=SimpleNamespace(eos_token_ids=eos_token_ids, vocab_size=vocab_size))
    return model, SimpleNamespace(eos_token_id=eos_token_id, all_special_ids=special_ids)


def test_stop_ids_are_the_eos_ids_then_the_tokenizers_special_tokens():
    # SmolLM2-Instruct: <|im_end|> (2) is the EOS; <|im_start|> (1) and <|endoftext|> (0) are special too
    model, tok = _model_and_tokenizer([2], 2, [1, 2, 0])
    assert stop_token_ids(model, tok, special_tokens=True) == (2, 0, 1)
    assert stop_token_ids(model, tok, special_tokens=False) == (2,)
    # the model's EOS ids come first; duplicates and ids outside the model's vocabulary are left out
    model, tok = _model_and_tokenizer([7, 3], 3, [99, 100, 250, 3, 5, 5], vocab_size=100)
    assert stop_token_ids(model, tok, special_tokens=True) == (7, 3, 5, 99)
    # no EOS in the model config: the tokenizer's EOS
    model, tok = _model_and_tokenizer([], 4, [])
    assert stop_token_ids(model, tok, special_tokens=True) == (4,)


def test_the_answer_rule_applies_only_where_the_grader_reads_the_first_answer_line():
    from thinkfast_plugins.datasets.competition_math import Math500
    from thinkfast_plugins.datasets.gsm8k import GSM8K

    from thinkfast.generate.runner import answer_stop_format

    class OwnVerdict(GSM8K):
        def check(self, problem, text):
            return None

    assert answer_stop_format(GSM8K(), True) == "gsm8k"
    assert answer_stop_format(GSM8K(), False) is None
    assert answer_stop_format(Math500(), True) is None  # reads the last boxed answer
    assert answer_stop_format(OwnVerdict(), True) is None  # grades the text its own way


@pytest.mark.parametrize("line, says", [
    ("{}", "a sample needs problem_id and sample_index"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"problem_id": "a", "sample_index": "x"}', "sample_index 'x' is not an integer"),
])
def test_a_sample_line_that_names_no_sample_is_a_data_error_naming_the_line(tmp_path, line, says):
    # a hand-edited or foreign samples.jsonl: resuming must say which line, not raise a KeyError
    with SampleWriter(tmp_path / "samples.jsonl") as w:
        w.write(_record("p1", 0))
    with (tmp_path / "samples.jsonl").open("a") as fh:
        fh.write(line + "\n")
    with pytest.raises(DataError, match=rf"samples.jsonl:2: {re.escape(says)}"):
        read_done(tmp_path)


def test_a_sample_line_that_is_not_utf8_is_a_data_error_naming_the_line(tmp_path):
    (tmp_path / "samples.jsonl").write_bytes(b'{"problem_id": "a", "sample_index": 0}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"samples.jsonl:2: not UTF-8 text \(byte 0xff\)"):
        read_done(tmp_path)


def test_accounted_wall_seconds_is_the_largest_total_on_record():
    from thinkfast.generate.output import accounted_wall_seconds

    assert accounted_wall_seconds({}, []) == 0.0  # a new run
    # a killed invocation's samples went past the marker's total; samples from before the field count via run.json
    samples = [{"seconds": 1.0}, {"total_wall_seconds": 12.5}, {"total_wall_seconds": 11.0}]
    assert accounted_wall_seconds({"status": "running", "total_wall_seconds": 10.0}, samples) == 12.5
    assert accounted_wall_seconds({"total_wall_seconds": 30.0}, [{"total_wall_seconds": 12.5}]) == 30.0
    # values no clock wrote are ignored, not summed or compared
    assert accounted_wall_seconds({"total_wall_seconds": "7"}, [{"total_wall_seconds": float("nan")},
                                                                {"total_wall_seconds": True}]) == 0.0
