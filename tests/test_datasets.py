"""Dataset plugins through the registry: local files, hub errors, field mapping, synthetic data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from thinkfast.config import from_dict
from thinkfast.config.common import DataSpec
from thinkfast.data import get_plugin, load_problems
from thinkfast.errors import DataError, RecipeError
from thinkfast.registry import get_registry

FIXTURES = Path(__file__).parent / "fixtures" / "data"
BUILTIN = ("gsm8k", "math500", "math", "openmathinstruct2", "jsonl", "synthetic-arith")


def spec(**data) -> DataSpec:
    """A DataSpec built the way a recipe builds it (validated, plugin options filled in)."""
    return from_dict(DataSpec, data, source="test", path="data")


def test_builtin_plugins_registered_with_options():
    registry = get_registry()
    for name in BUILTIN:
        cls = registry.get("datasets", name)
        assert cls.answer_format in ("gsm8k", "math", "plain")
        assert cls.instruction


def test_recipe_validation_checks_plugin_options():
    filled = spec(dataset="synthetic-arith", options={"max_steps": 3})
    assert filled.options["max_steps"] == 3 and filled.options["max_operand"] == 20
    with pytest.raises(RecipeError, match="data.options.max_stepz"):
        spec(dataset="synthetic-arith", options={"max_stepz": 3})
    with pytest.raises(RecipeError, match="min_steps"):
        spec(dataset="synthetic-arith", options={"min_steps": 5, "max_steps": 2})
    with pytest.raises(RecipeError, match="not a MATH subject"):
        spec(dataset="math", options={"subjects": ["alchemy"]})


# --- gsm8k --------------------------------------------------------------------------------------

def test_gsm8k_real_train_file(gsm8k_train_path):
    plugin, problems = load_problems(spec(dataset="gsm8k", path=str(gsm8k_train_path)))
    assert len(problems) == 7473
    first = problems[0]
    assert first.id == "gsm8k-train-0"
    assert first.question.startswith("Natalia sold clips")
    assert first.answer == "72"
    assert "<<" not in first.solution and "####" not in first.solution
    assert all("<<" not in p.solution for p in problems)
    assert len({p.id for p in problems}) == len(problems)
    # the reference solution, formatted as the instruction asks, is graded correct by the plugin
    assert plugin.check(first, plugin.response_text(first)) is True
    assert plugin.check(first, "So she sold 71 clips.\n#### 71") is False


def test_offset_and_limit_keep_ids_stable(gsm8k_train_path):
    _, window = load_problems(spec(dataset="gsm8k", path=str(gsm8k_train_path), offset=100, limit=5))
    assert [p.id for p in window] == [f"gsm8k-train-{i}" for i in range(100, 105)]


def test_gsm8k_hub_layout_directory_parquet_and_json(gsm8k_train_path, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = gsm8k_train_path.read_text().splitlines()[:20]
    records = [json.loads(line) for line in lines]
    (tmp_path / "main").mkdir()
    pq.write_table(pa.Table.from_pylist(records[:12]), tmp_path / "main" / "train-00000-of-00001.parquet")
    (tmp_path / "main" / "test.json").write_text(json.dumps(records[12:]))
    _, train = load_problems(spec(dataset="gsm8k", path=str(tmp_path), split="train"))
    _, test = load_problems(spec(dataset="gsm8k", path=str(tmp_path), split="test"))
    assert [p.question for p in train] == [r["question"] for r in records[:12]]
    assert [p.question for p in test] == [r["question"] for r in records[12:]]
    with pytest.raises(DataError, match="no file for split 'validation'"):
        load_problems(spec(dataset="gsm8k", path=str(tmp_path), split="validation"))


def test_a_data_files_split_is_the_split_word_in_its_name_else_its_stem(tmp_path):
    from thinkfast.data.files import split_of_file

    names = {"gsm8k_train.jsonl": "train", "test.jsonl": "test", "train-00000-of-00001.parquet": "train",
             "my-validation.json": "validation", "x.val.jsonl": "val", "problems.jsonl": "problems",
             "train_1M.jsonl": "train_1M", "train-test.jsonl": "train-test"}
    for name in names:
        (tmp_path / name).write_text("")
    assert {name: split_of_file(tmp_path / name) for name in names} == names
    assert split_of_file(tmp_path) is None and split_of_file(tmp_path / "absent_train.jsonl") is None


def test_malformed_line_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q1", "answer": "x\\n#### 1"}\n\n{"question": "q2", "answer": \n')
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}:3: not valid JSON \(Expecting value at column 30\)"):
        load_problems(spec(dataset="gsm8k", path=str(bad)))
    bad.write_text('{"question": "q1", "answer": "x\\n#### 1"}\n{"question": "q2", "answer": "no marker"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: the answer field has no '#### <number>'"):
        load_problems(spec(dataset="gsm8k", path=str(bad)))
    bad.write_text('{"q": "q1", "answer": "x\\n#### 1"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing field 'question' \(fields present: answer, q\)"):
        load_problems(spec(dataset="gsm8k", path=str(bad)))
    bad.write_text('["not", "an", "object"]\n')
    with pytest.raises(DataError, match="bad.jsonl:1: expected a JSON object"):
        load_problems(spec(dataset="gsm8k", path=str(bad)))


def test_a_dataset_line_that_is_not_an_object_names_the_fix(tmp_path):
    """Before: 'expected a JSON object, got list' said what was wrong but not what the file must hold."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q1", "answer": "x\\n#### 1"}\n["q2", "x\\n#### 2"]\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}:2: expected a JSON object, got list; each line "
                                        rf"must be one JSON object$"):
        load_problems(spec(dataset="gsm8k", path=str(bad)))


def test_a_dataset_last_line_without_newline_is_read_or_named_never_dropped(tmp_path):
    """A file the user gave us is not one a killed writer left: its last line, newline or not, is read, and
    when it is not JSON that is an error naming the line (a cut line is dropped only in files thinkfast writes)."""
    path = tmp_path / "data.jsonl"
    path.write_text('{"question": "q1", "answer": "x\\n#### 1"}\n{"question": "q2", "answer": "x\\n#### 2"}')
    assert [p.question for p in load_problems(spec(dataset="gsm8k", path=str(path)))[1]] == ["q1", "q2"]
    path.write_text('{"question": "q1", "answer": "x\\n#### 1"}\n{"question": "q2", "ans')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: not valid JSON \(.*\); each line must be"):
        load_problems(spec(dataset="gsm8k", path=str(path)))


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_encoding_a_bom_is_read_and_bytes_that_are_not_utf8_are_named(tmp_path, suffix):
    """A byte-order mark (Windows editors write one) was 'not valid JSON'; Latin-1 text was a
    UnicodeDecodeError traceback in distill, generate and evaluate."""
    record = '{"question": "Caf\u00e9 q", "answer": "x\\n#### 1"}'
    text = record + "\n" if suffix == ".jsonl" else f"[{record}]"
    path = tmp_path / f"data{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (problem,) = load_problems(spec(dataset="gsm8k", path=str(path)))[1]
    assert problem.question == "Caf\u00e9 q"
    path.write_bytes(('{"question": "ok", "answer": "x\\n#### 1"}\n' if suffix == ".jsonl" else "").encode()
                     + text.encode("latin-1"))
    where = f"{path}:2" if suffix == ".jsonl" else str(path)
    with pytest.raises(DataError, match=rf"^{re.escape(where)}: not UTF-8 text \(byte 0xe9\); save the file as UTF-8$"):
        load_problems(spec(dataset="gsm8k", path=str(path)))


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_problems(spec(dataset="gsm8k", path=str(tmp_path / "nope.jsonl")))
    (tmp_path / "data.csv").write_text("question,answer\n")
    with pytest.raises(DataError, match=r"not a \.jsonl, \.json or \.parquet file"):
        load_problems(spec(dataset="gsm8k", path=str(tmp_path / "data.csv")))


def test_hub_branch_goes_through_datasets_load_dataset(gsm8k_train_path, tmp_path, monkeypatch):
    """With no data.path the plugin calls datasets.load_dataset(hub_id, ...); a local repo-shaped dir stands in."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")

    records = [json.loads(line) for line in gsm8k_train_path.read_text().splitlines()[:8]]
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records[:5]), repo / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(records[5:]), repo / "data" / "test-00000-of-00001.parquet")
    hub = {"hub_id": str(repo), "hub_config": ""}
    _, test = load_problems(spec(dataset="gsm8k", split="test", options=hub))
    assert [p.question for p in test] == [r["question"] for r in records[5:]]
    assert test[0].id == "gsm8k-test-0"
    _, streamed = load_problems(spec(dataset="gsm8k", split="train", limit=2, options={**hub, "streaming": True}))
    assert [p.question for p in streamed] == [r["question"] for r in records[:2]]


def test_hub_unreachable_offline_says_to_pass_path():
    with pytest.raises(DataError, match=r"openai/gsm8k \(main\) split 'test'.*set data.path"):
        load_problems(spec(dataset="gsm8k", split="test", limit=3))


# --- MATH family ----------------------------------------------------------------------------------

def test_math_answers_are_last_boxed_with_nested_braces_and_fbox():
    _, problems = load_problems(spec(dataset="math", path=str(FIXTURES / "math_train.jsonl")))
    assert [p.answer for p in problems] == ["\\frac{3}{4}", "4", "(1, 2)", "\\frac{3}{4}", "120"]
    assert problems[0].metadata == {"subject": "Prealgebra", "level": 1}
    assert problems[0].id == "math-train-0"


def test_math_level_filter_keeps_source_ids():
    _, problems = load_problems(spec(dataset="math", path=str(FIXTURES / "math_train.jsonl"),
                                     options={"levels": [2]}))
    assert [p.id for p in problems] == ["math-train-1", "math-train-3", "math-train-4"]


def test_math500_uses_answer_field_or_boxed_and_unique_ids():
    plugin, problems = load_problems(spec(dataset="math500", split="test", path=str(FIXTURES / "math500_test.jsonl")))
    assert [p.id for p in problems] == ["test/prealgebra/1.json", "test/algebra/2.json", "test/number_theory/3.json"]
    assert [p.answer for p in problems] == ["17", "5\\sqrt{2}", "\\frac{1}{3}"]
    assert plugin.extract_answer("so it is $\\boxed{\\dfrac{1}{3}}$") == "\\frac{1}{3}"
    assert plugin.check(problems[0], "\\boxed{17}") is None  # MATH answers are left to the grader


def test_math500_hub_has_only_test_split():
    with pytest.raises(DataError, match="only the 'test' split"):
        load_problems(spec(dataset="math500", split="train"))


def test_openmathinstruct2_fields_and_source_filter(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [json.loads(line) for line in (FIXTURES / "openmathinstruct2_train.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "train_1M.parquet")
    _, problems = load_problems(spec(dataset="openmathinstruct2", split="train_1M",
                                     path=str(tmp_path / "train_1M.parquet")))
    assert [p.answer for p in problems] == ["42", "-7", "10"]
    assert problems[0].solution.endswith("$\\boxed{42}$.")
    _, kept = load_problems(spec(dataset="openmathinstruct2", path=str(FIXTURES / "openmathinstruct2_train.jsonl"),
                                 options={"sources": ["math", "augmented_math"]}))
    assert [p.id for p in kept] == ["omi2-train-1", "omi2-train-2"]


# --- jsonl ----------------------------------------------------------------------------------------

def test_jsonl_field_mapping():
    plugin, problems = load_problems(spec(
        dataset="jsonl", path=str(FIXTURES / "custom_qa.jsonl"),
        options={"question_field": "prompt", "answer_field": "target", "solution_field": "rationale",
                 "id_field": "uid"},
    ))
    assert [p.id for p in problems] == ["q-1", "q-2", "train-2"]
    assert [p.answer for p in problems] == ["Paris", "8", "green"]
    assert problems[0].metadata == {"topic": "geography"}
    assert plugin.answer_format == "plain"
    assert plugin.extract_answer("Let me think.\nThe answer is paris.") == "paris"
    assert plugin.response_text(problems[1]).endswith("The answer is 8.")


def test_jsonl_missing_field_names_the_option_and_needs_path():
    with pytest.raises(DataError, match=r"custom_qa.jsonl:1: missing field 'question'.*data.options.question_field"):
        load_problems(spec(dataset="jsonl", path=str(FIXTURES / "custom_qa.jsonl")))
    with pytest.raises(DataError, match="reads local files only"):
        load_problems(spec(dataset="jsonl"))


def test_jsonl_answer_is_solution_reads_gsm8k_style_files(gsm8k_train_path):
    plugin, problems = load_problems(spec(
        dataset="jsonl", path=str(gsm8k_train_path), limit=3,
        options={"answer_format": "gsm8k", "answer_is_solution": True},
    ))
    assert [p.answer for p in problems] == ["72", "10", "5"]
    assert "####" not in problems[0].solution
    assert plugin.response_text(problems[0]).count("####") == 1


# --- synthetic-arith ------------------------------------------------------------------------------

_STEP = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+), so ")


def _replay(problem) -> int:
    """Recompute the answer from the solution lines, checking each step's arithmetic."""
    value = None
    for line in problem.solution.splitlines():
        a, op, b, r = _STEP.match(line).groups()
        a, b, r = int(a), int(b), int(r)
        assert value is None or a == value
        assert r == {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        if op == "/":
            assert a % b == 0
        value = r
    return value


def test_synthetic_arith_is_exact_and_respects_knobs():
    options = {"min_steps": 3, "max_steps": 5, "max_operand": 12, "max_value": 200, "operations": ["+", "*", "/"]}
    plugin, problems = load_problems(spec(dataset="synthetic-arith", limit=300, options=options))
    assert len(problems) == 300
    for p in problems:
        assert str(_replay(p)) == p.answer
        assert 3 <= p.metadata["steps"] <= 5
        assert set(p.metadata["operations"]) <= {"+", "*", "/"}
        assert all(int(n) <= 200 for n in re.findall(r"\d+", p.solution))
        assert plugin.check(p, plugin.response_text(p)) is True
        assert plugin.check(p, f"#### {int(p.answer) + 1}") is False


def test_synthetic_arith_seeded_deterministic_and_splits_disjoint():
    first = load_problems(spec(dataset="synthetic-arith", limit=50))[1]
    again = load_problems(spec(dataset="synthetic-arith", limit=50))[1]
    other = load_problems(spec(dataset="synthetic-arith", limit=50, options={"seed": 1}))[1]
    assert [p.question for p in first] == [p.question for p in again]
    assert [p.question for p in first] != [p.question for p in other]
    easy = {"min_steps": 1, "max_steps": 1, "max_operand": 5, "operations": ["+"], "test_size": 400}
    train = {p.question for p in load_problems(spec(dataset="synthetic-arith", limit=2000, options=easy))[1]}
    test = {p.question for p in load_problems(spec(dataset="synthetic-arith", split="test", options=easy))[1]}
    assert len(test) > 5 and not train & test  # tiny problem space, still disjoint


def test_synthetic_arith_split_size_and_bad_inputs(tmp_path):
    _, problems = load_problems(spec(dataset="synthetic-arith", split="test", options={"test_size": 7}))
    assert [p.id for p in problems] == [f"arith-test-{i}" for i in range(7)]
    with pytest.raises(DataError, match="splits train, test"):
        load_problems(spec(dataset="synthetic-arith", split="validation"))
    with pytest.raises(DataError, match="reads no files"):
        load_problems(spec(dataset="synthetic-arith", path=str(tmp_path)))


def test_few_shot_examples_never_include_the_selected_problems():
    s = spec(dataset="synthetic-arith", offset=0, limit=4, few_shot=3)
    plugin = get_plugin(s)
    shots = plugin.few_shot_problems(s)
    assert [p.id for p in shots] == ["arith-train-4", "arith-train-5", "arith-train-6"]
    test_spec = spec(dataset="synthetic-arith", split="test", limit=4, few_shot=2)
    assert [p.id for p in plugin.few_shot_problems(test_spec)] == ["arith-train-0", "arith-train-1"]


def test_few_shot_examples_from_one_test_file_are_never_the_problems_asked(gsm8k_train_path, tmp_path):
    """A single data file is read whatever the split, so the 'train' examples come from the very file
    whose problems are asked: each problem was shown its own worked solution (and answer)."""
    test_file = tmp_path / "gsm8k_test.jsonl"
    test_file.write_text("".join(gsm8k_train_path.read_text().splitlines(keepends=True)[:6]))
    s = spec(dataset="gsm8k", path=str(test_file), split="test", limit=2, few_shot=3)
    plugin, asked = load_problems(s)
    shots = plugin.few_shot_problems(s)
    assert len(shots) == 3
    assert not {p.question for p in shots} & {p.question for p in asked}
    with pytest.raises(DataError, match=r"few_shot = 3: .*gsm8k_test.jsonl \(one file.* only 1 problem"):
        plugin.few_shot_problems(spec(dataset="gsm8k", path=str(test_file), split="test", limit=5, few_shot=3))


def test_a_bom_at_the_start_of_a_later_line_is_read(tmp_path):
    """Files that each start with a byte-order mark, joined with `cat`, carry one at the start of a later
    line; that line was 'not valid JSON (Unexpected UTF-8 BOM (decode using utf-8-sig) ...)'."""
    bom = b"\xef\xbb\xbf"
    part = b'{"question": "q", "answer": "x\\n#### 1"}\n'
    path = tmp_path / "joined.jsonl"
    path.write_bytes(bom + part + bom + part)
    assert len(load_problems(spec(dataset="gsm8k", path=str(path)))[1]) == 2


_LONG = '{"text": "' + "x" * 200_000  # longer than one backward read of repair_cut_end


@pytest.mark.parametrize("lines, tail, kept_tail", [
    (2, _LONG.encode(), b""),  # cut: removed
    (2, (_LONG + '"}').encode(), (_LONG + '"}\n').encode()),  # whole but no newline: gets one
    (0, ('{"text": "' + "é" * 70_000).encode()[:-1], b""),  # the only line, cut inside a 2-byte character
    (3, b"", b""),  # ends in a newline: untouched
])
def test_repair_cut_end_reads_the_last_line_from_the_end(tmp_path, lines, tail, kept_tail):
    """Before a resumed run appends to its samples.jsonl (or a grade cache), an unfinished last line left by a
    kill is cut away and a whole one missing its newline gets one; the lines before are kept byte for byte,
    also when the last line is longer than the piece read backwards at a time."""
    from thinkfast.data.files import repair_cut_end

    path = tmp_path / "samples.jsonl"
    head = "".join(json.dumps({"i": i}) + "\n" for i in range(lines)).encode()
    path.write_bytes(head + tail)
    repair_cut_end(path)
    assert path.read_bytes() == head + kept_tail
