"""``thinkfast evaluate`` end to end on the fixture runs: report.json, table, plots, errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from thinkfast.cli import cli
from thinkfast.evaluate.config import AggregatorSpec, EvaluateSection
from thinkfast.evaluate.engine import ModelResult, Series, evaluate
from thinkfast.evaluate.metrics import pass_at_k
from thinkfast.evaluate.plots import figure
from thinkfast.evaluate.report import print_summary
from thinkfast.plotting import COLUMN_WIDTH, FULL_WIDTH

FIXTURES = Path(__file__).parent / "fixtures" / "evaluate"


def _run(args: list[str]):
    return CliRunner().invoke(cli, ["evaluate", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    result = _run(["--runs", str(FIXTURES / "teacher"), "--runs", str(FIXTURES / "student"), "-o", str(out),
                   "--set", "evaluate.bootstrap=200", "--set", "evaluate.subsets=20",
                   "--set", 'evaluate.aggregators=[{name="majority"},{name="verifier",options={mode="check"}}]'])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_report_has_every_metric_per_model(evaluated):
    out, _ = evaluated
    report = json.loads((out / "report.json").read_text())
    models = {r["model"]: r for r in report["results"]}
    assert set(models) == {"Llama-3.2-1B-Instruct", "student"}
    for r in models.values():
        assert r["dataset"] == "gsm8k" and r["problems"] == 12 and r["n_samples"] == 8
        assert r["coverage"]["k"] == [1, 2, 4, 8]
        for series in (r["coverage"], *r["accuracy"].values()):
            assert all(lo <= m <= hi for lo, m, hi in zip(series["low"], series["mean"], series["high"], strict=True))
        assert set(r["accuracy"]) == {"majority", "verifier"}
        # an oracle check picks a correct answer whenever one is drawn: accuracy@k == coverage@k
        np_cov, np_ver = r["coverage"]["mean"], r["accuracy"]["verifier"]["mean"]
        assert np_ver == pytest.approx(np_cov, abs=0.08)
        assert np_cov == sorted(np_cov)  # coverage grows with k
    assert report["grading"]["samples"] == 2 * 12 * 8


def test_coverage_matches_pass_at_k_of_the_grades(evaluated):
    out, _ = evaluated
    report = json.loads((out / "report.json").read_text())
    teacher = next(r for r in report["results"] if r["model"] == "student")
    lines = [json.loads(line) for line in (FIXTURES / "student" / "samples.jsonl").read_text().splitlines()]
    from thinkfast.registry import get_registry

    gsm8k = get_registry().get("datasets", "gsm8k")()
    correct: dict[str, int] = {}
    for rec in lines:
        ok = gsm8k.extract_answer(rec["text"]) == rec["answer"]
        correct[rec["problem_id"]] = correct.get(rec["problem_id"], 0) + ok
    for k, mean in zip(teacher["coverage"]["k"], teacher["coverage"]["mean"], strict=True):
        assert mean == pytest.approx(sum(pass_at_k(8, c, k) for c in correct.values()) / len(correct))


def test_seconds_come_from_run_json(evaluated):
    out, _ = evaluated
    report = json.loads((out / "report.json").read_text())
    run = json.loads((FIXTURES / "student" / "run.json").read_text())
    per_sample = sum(v / 8 for v in run["problem_seconds"].values()) / len(run["problem_seconds"])
    student = next(r for r in report["results"] if r["model"] == "student")
    assert student["generation_seconds_per_sample"] == pytest.approx(per_sample)
    assert student["coverage"]["seconds"] == pytest.approx([k * per_sample for k in (1, 2, 4, 8)])
    cost = student["aggregator_seconds_per_sample"]["verifier"]
    assert cost > 0
    assert student["accuracy"]["verifier"]["seconds"][-1] == pytest.approx(8 * (per_sample + cost))


def test_table_and_plots(evaluated, figure_files):
    """Every figure is a PNG and a vector PDF (papers need those) of the same size, named in the output: one
    panel (coverage) fits one column of a two-column paper, two (two aggregators) its full width."""
    out, output = evaluated
    assert "Llama-3.2-1B-Instruct" in output and "majority@k" in output and "pass@k" in output
    stems = ["gsm8k-accuracy-vs-k", "gsm8k-accuracy-vs-seconds", "gsm8k-coverage-vs-k", "gsm8k-coverage-vs-seconds"]
    assert sorted(p.name for p in out.glob("*.p*")) == sorted(f"{s}.{e}" for s in stems for e in ("pdf", "png"))
    for stem in stems:
        for ext in ("png", "pdf"):
            assert f"wrote {out / f'{stem}.{ext}'}" in output
        width, height = figure_files(out / f"{stem}.png")
        assert width == pytest.approx(COLUMN_WIDTH if "coverage" in stem else FULL_WIDTH) and height < 3.5


def test_figure_width_sets_the_width_of_every_figure_in_inches(tmp_path, figure_files):
    out = tmp_path / "out"
    args = ["--runs", str(FIXTURES / "student"), "-o", str(out), "--set", "evaluate.bootstrap=0",
            "--set", "evaluate.subsets=2"]
    assert _run([*args, "--figure-width", "5.5"]).exit_code == 0
    assert [figure_files(png)[0] for png in sorted(out.glob("*.png"))] == pytest.approx([5.5] * 4)
    result = CliRunner().invoke(cli, ["evaluate", *args, "--figure-width", "25"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: --figure-width: 25 in is not a figure width; give inches from 2 to 20" in result.output


def test_bad_samples_file_is_a_clean_error(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "student", run)
    with (run / "samples.jsonl").open("a") as fh:
        fh.write('{"problem_id": "x", "text": "hi"}\n')
    result = CliRunner().invoke(cli, ["evaluate", "--runs", str(run), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "samples.jsonl:97" in result.output and "missing key(s) sample_index, answer, dataset" in result.output


def test_no_runs_and_unknown_aggregator_are_clean_errors(tmp_path):
    from test_cli_errors import assert_one_error

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["evaluate", "-o", str(out)])
    assert_one_error(result, "no runs to evaluate: pass --runs DIR")
    # the error names the bad name and suggests the right one ("majority" alone is in the list of installed ones)
    result = CliRunner().invoke(cli, ["evaluate", "--runs", str(FIXTURES / "student"), "--aggregator", "majorty",
                                      "-o", str(out)])
    assert_one_error(result, "error: --aggregator: no aggregators plugin named 'majorty' (did you mean 'majority'?)")
    assert not out.exists()


def test_unfinished_and_mismatched_runs_are_warned_about(tmp_path):
    """A run that did not finish, or runs over different problems, are flagged in the report and terminal."""
    unfinished = tmp_path / "unfinished"
    shutil.copytree(FIXTURES / "student", unfinished)
    meta = json.loads((unfinished / "run.json").read_text())
    meta["status"] = "running"
    (unfinished / "run.json").write_text(json.dumps(meta))
    lines = (unfinished / "samples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])["problem_id"]
    (unfinished / "samples.jsonl").write_text(
        "\n".join(line for line in lines if json.loads(line)["problem_id"] != first) + "\n")
    out = tmp_path / "out"
    result = _run(["--runs", str(FIXTURES / "teacher"), "--runs", str(unfinished), "-o", str(out),
                   "--set", "evaluate.bootstrap=0", "--set", "evaluate.subsets=2"])
    assert result.exit_code == 0, result.output
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert any("status 'running'" in w for w in warnings)
    assert any("different problems" in w for w in warnings)
    assert "warning:" in result.output


def test_samples_a_stopped_torchrun_generate_left_unmerged_are_warned_about(tmp_path):
    """samples.jsonl from an earlier merge plus a rank's file from a later, stopped invocation: the rank's samples
    are not evaluated, and the warning says how to merge them."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "student", run)
    lines = (run / "samples.jsonl").read_text().splitlines(keepends=True)
    (run / "samples.jsonl").write_text("".join(lines[:-2]))
    (run / "samples.rank1.jsonl").write_text("".join(lines[-2:]))
    out = tmp_path / "out"
    result = _run(["--runs", str(run), "-o", str(out), "--set", "evaluate.bootstrap=0", "--set",
                   "evaluate.subsets=2"])
    assert result.exit_code == 0, result.output
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert (f"{run}: samples.rank1.jsonl hold samples a stopped torchrun generate did not merge into samples.jsonl; "
            f"they are not evaluated: run the same generate again with -o {run} to merge them") in warnings


def test_runs_timed_on_different_devices_are_warned_about(tmp_path, evaluated):
    """Seconds from two cards compare the cards too: the report says so; one card says nothing."""
    out, _ = evaluated
    assert not any("different devices" in w for w in json.loads((out / "report.json").read_text())["warnings"])
    other = tmp_path / "other-card"
    shutil.copytree(FIXTURES / "student", other)
    meta = json.loads((other / "run.json").read_text())
    assert json.loads((FIXTURES / "teacher" / "run.json").read_text())["device"] == meta["device"]
    meta["device"] = "NVIDIA H200"
    (other / "run.json").write_text(json.dumps(meta))
    result = _run(["--runs", str(FIXTURES / "teacher"), "--runs", str(other), "-o", str(tmp_path / "out"),
                   "--set", "evaluate.bootstrap=0", "--set", "evaluate.subsets=2"])
    assert result.exit_code == 0, result.output
    warnings = json.loads((tmp_path / "out" / "report.json").read_text())["warnings"]
    assert any("different devices" in w and meta["device"] in w for w in warnings)


def test_interrupted_run_is_compared_on_the_problems_every_run_completed(tmp_path):
    """A run interrupted before its final run.json: problem_seconds come from its samples' seconds, and
    --common-problems evaluates every run on the problems all of them completed."""
    cut = tmp_path / "cut"
    shutil.copytree(FIXTURES / "student", cut)
    (cut / "run.json").write_text(json.dumps({"status": "running", "settings": {"n_samples": 8}}))
    records = [json.loads(line) for line in (cut / "samples.jsonl").read_text().splitlines()]
    ids = sorted({r["problem_id"] for r in records})
    dropped = ids[0]
    kept = [r for r in records if not (r["problem_id"] == dropped and r["sample_index"] >= 3)]  # 3 of 8 left
    (cut / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    out = tmp_path / "out"
    result = _run(["--runs", str(FIXTURES / "teacher"), "--runs", str(cut), "--common-problems", "-o", str(out),
                   "--set", "evaluate.bootstrap=0", "--set", "evaluate.subsets=2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [r["problems"] for r in report["results"]] == [len(ids) - 1, len(ids) - 1]
    assert all(r["n_samples"] == 8 for r in report["results"])
    student = report["results"][1]
    per_problem = {}
    for r in kept:
        if r["problem_id"] != dropped:
            per_problem[r["problem_id"]] = per_problem.get(r["problem_id"], 0.0) + r["seconds"]
    expected = sum(per_problem.values()) / (8 * len(per_problem))  # mean seconds per sample over kept problems
    assert student["generation_seconds_per_sample"] == pytest.approx(expected)
    warnings = report["warnings"]
    assert any("summed from the samples' seconds" in w for w in warnings)
    assert any(f"evaluated on the {len(ids) - 1} problems every run completed" in w for w in warnings)
    assert not any("different problems" in w for w in warnings)  # the common set resolved that


def test_without_bootstrap_there_are_no_intervals(tmp_path):
    """evaluate.bootstrap = 0: report.json's interval bounds are null and the table shows means only."""
    out = tmp_path / "out"
    result = _run(["--runs", str(FIXTURES / "student"), "-o", str(out), "--set", "evaluate.bootstrap=0",
                   "--set", "evaluate.subsets=2"])
    assert result.exit_code == 0, result.output
    (student,) = json.loads((out / "report.json").read_text())["results"]
    for series in (student["coverage"], *student["accuracy"].values()):
        assert series["low"] == series["high"] == [None] * len(series["k"])
        assert all(0 <= m <= 1 for m in series["mean"])
    assert "interval" not in result.output and "±" not in result.output and "[" not in result.output
    assert f"{100 * student['coverage']['mean'][-1]:.1f}" in result.output


def test_table_shows_both_ends_of_each_interval(evaluated):
    """An interval need not be symmetric ([0, 18.8] around 6.2): the table gives both ends, not ± half its width."""
    out, output = evaluated
    report = json.loads((out / "report.json").read_text())
    assert "95% bootstrap interval" in output and "±" not in output
    for r in report["results"]:
        for series, i in [(r["coverage"], 0), (r["coverage"], -1), *((s, -1) for s in r["accuracy"].values())]:
            m, lo, hi = (100 * series[key][i] for key in ("mean", "low", "high"))
            assert f"{m:.1f} [{lo:.1f}, {hi:.1f}]" in output


def _render(renderable_printer, width: int) -> str:
    console = Console(width=width, record=True, highlight=False)
    renderable_printer(console)
    return console.export_text()


def test_summary_fits_80_columns_with_every_name_and_number_whole():
    """In an 80-column terminal nothing is cut off with an ellipsis: names and numbers appear whole."""
    section = EvaluateSection(aggregators=[AggregatorSpec("majority"), AggregatorSpec("verifier", "",
                                                                                      {"mode": "check"})],
                              bootstrap=200, subsets=20)
    evaluation = evaluate(section, [FIXTURES / "teacher", FIXTURES / "student"], output_dir=None)
    text = _render(lambda console: print_summary(evaluation, 0.95, console), 80)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for r in evaluation.results:
        assert r.model in text and f"{r.seconds_per_sample:.3g} s/sample" in text and r.dataset in text
        for metric, series in [("pass@k", r.coverage), *((f"{a}@k", s) for a, s in r.accuracy.items())]:
            assert metric in text
            for i in (0, -1):
                assert f"{100 * series.mean[i]:.1f} [{100 * series.low[i]:.1f}, {100 * series.high[i]:.1f}]" in text


def test_a_model_name_wider_than_its_column_folds_instead_of_being_cut():
    section = EvaluateSection(bootstrap=50, subsets=5)
    evaluation = evaluate(section, [FIXTURES / "student"], output_dir=None)
    name = "runs/a-rather-long-directory-name-for-one-student/checkpoint-final"
    evaluation.results[0].model = name
    text = _render(lambda console: print_summary(evaluation, 0.95, console), 60)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 60
    first_column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    assert first_column.startswith(name)


def test_runs_in_directories_of_one_name_get_distinct_labels(tmp_path):
    """Two runs whose directories share a name are told apart by the shortest parent path that differs;
    two runs of one model in differently named directories by the directory's name."""
    shutil.copytree(FIXTURES / "student", tmp_path / "x" / "student")
    for name in ("teacher-a", "teacher-b"):
        shutil.copytree(FIXTURES / "teacher", tmp_path / name)
    out = tmp_path / "out"
    result = _run(["--runs", str(FIXTURES / "student"), "--runs", str(tmp_path / "x" / "student"),
                   "--runs", str(tmp_path / "teacher-a"), "--runs", str(tmp_path / "teacher-b"), "-o", str(out),
                   "--set", "evaluate.bootstrap=0", "--set", "evaluate.subsets=2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in report["results"]] == [
        "evaluate/student", "x/student", "Llama-3.2-1B-Instruct (teacher-a)", "Llama-3.2-1B-Instruct (teacher-b)"]
    assert report["grading"]["samples"] == 4 * 12 * 8  # every run graded, none hidden behind another's label
    assert all(r["model"] in result.output for r in report["results"])


def test_a_run_given_twice_is_evaluated_once_with_a_warning(tmp_path):
    out = tmp_path / "out"
    again = FIXTURES / "student" / ".." / "student"
    result = _run(["--runs", str(FIXTURES / "student"), "--runs", str(again), "-o", str(out),
                   "--set", "evaluate.bootstrap=0", "--set", "evaluate.subsets=2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in report["results"]] == ["student"]
    assert report["grading"]["samples"] == 12 * 8
    assert report["warnings"] == [f"{again}: given more than once (also as {FIXTURES / 'student'}); evaluated once"]
    assert "given more than once" in result.output


def _result(model: str, seconds_per_sample: float, accuracy: list[float]) -> ModelResult:
    ks = [1, 2, 4, 8]
    series = Series(ks, [k * seconds_per_sample for k in ks], accuracy, [max(0.0, a - 0.2) for a in accuracy],
                    [min(1.0, a + 0.1) for a in accuracy])
    return ModelResult(model, "gsm8k", "run", 12, 8, seconds_per_sample, 1.0, series, {"majority": series})


@pytest.mark.parametrize("metric", ["coverage", "accuracy"])
def test_plots_against_seconds_under_one_decade_read_cleanly(metric, check_figure_readable):
    """0.3 to 2.4 s is less than a decade: matplotlib would label minor ticks (3×10⁻¹4×10⁻¹) on top of each
    other; the labels are plain numbers, apart, and the legend hides no point."""
    results = [_result("teacher", 0.3, [0.05, 0.1, 0.3, 0.9]), _result("student", 0.15, [0.9, 0.92, 0.95, 0.97])]
    fig = figure(results, metric, True, "gsm8k")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert "0.5" in labels and "1" in labels
    check_figure_readable(fig)


@pytest.mark.parametrize("value", [0.0, 0.25, 1.0])
def test_plots_of_a_constant_accuracy_show_a_readable_range_inside_0_to_100(value):
    """A model that never answers was drawn on an axis from -0.04 to 0.04 %; one always right went above 100 %."""
    series = Series([1, 2, 4, 8], [0.1, 0.2, 0.4, 0.8], [value] * 4, [None] * 4, [None] * 4)
    result = ModelResult("student", "gsm8k", "run", 12, 8, 0.1, 1.0, series, {"majority": series})
    for metric in ("coverage", "accuracy"):
        for by_seconds in (False, True):
            for ax in figure([result], metric, by_seconds, "gsm8k").axes:
                low, high = ax.get_ylim()
                assert 0.0 <= low <= 100 * value <= high <= 100.0
                assert high - low >= 5.0


def test_four_aggregators_are_two_rows_of_panels_sharing_their_axes(check_figure_readable):
    """Side by side, panels whose x ranges differ read as comparable when they are not: an aggregator that
    costs seconds (a reward model) shifts its lines right. The panels share both axes, four of them sit
    2 x 2 in a page-wide figure, and only the left column repeats no y label."""
    aggregators = {"majority": 0.0, "prm-weighted": 0.5, "verifier": 0.1, "orm": 2.0}
    results = []
    for model, seconds in (("teacher", 0.3), ("runs/distill/an-experiment-with-a-rather-long-name/final", 0.1)):
        ks = [1, 2, 4, 8]
        series = {name: Series(ks, [k * (seconds + cost) for k in ks], [0.2, 0.4, 0.5, 0.6], [0.1, 0.3, 0.4, 0.5],
                               [0.3, 0.5, 0.6, 0.7]) for name, cost in aggregators.items()}
        results.append(ModelResult(model, "gsm8k", "run", 12, 8, seconds, 1.0, series["majority"], series))
    fig = figure(results, "accuracy", True, "gsm8k")
    assert len(fig.axes) == 4 and fig.get_figwidth() == pytest.approx(FULL_WIDTH)
    rows = sorted({round(ax.get_position().y0, 3) for ax in fig.axes})
    assert len(rows) == 2
    assert len({ax.get_xlim() for ax in fig.axes}) == 1 and len({ax.get_ylim() for ax in fig.axes}) == 1
    assert [bool(ax.get_ylabel()) for ax in fig.axes] == [True, False, True, False]
    check_figure_readable(fig)


def test_plots_keep_their_bands_inside_0_to_100_percent():
    fig = figure([_result("teacher", 0.3, [0.0, 0.1, 0.5, 1.0])], "accuracy", False, "gsm8k")
    low, high = fig.axes[0].get_ylim()
    assert low == 0.0 and high == 100.0


def test_grades_file_lists_every_answer_even_when_none_needs_math_verify(tmp_path):
    """GSM8K answers are plain numbers, all decided without math-verify: grades.jsonl is written anyway,
    one line per pair of answers compared, with its verdict, and a rerun adds no line."""
    from thinkfast.evaluate.grading import quick_equal
    from thinkfast.registry import get_registry

    out = tmp_path / "out"
    args = ["--runs", str(FIXTURES / "teacher"), "--runs", str(FIXTURES / "student"), "-o", str(out),
            "--set", "evaluate.bootstrap=0", "--set", "evaluate.subsets=2"]
    assert _run(args).exit_code == 0
    text = (out / "grades.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    gsm8k = get_registry().get("datasets", "gsm8k")()
    expected = set()
    for run in ("teacher", "student"):
        for line in (FIXTURES / run / "samples.jsonl").read_text().splitlines():
            record = json.loads(line)
            answer = gsm8k.extract_answer(record["text"])
            if answer:
                expected.add(("gsm8k", record["answer"], answer, quick_equal(record["answer"], answer), "quick"))
    recorded = {(r["dataset"], r["gold"], r["pred"], r["equal"], r["status"]) for r in lines}
    assert expected <= recorded and len(recorded) == len(lines)  # every answer against its reference, once
    # the rest compare two wrong answers of a problem (are they one class?)
    assert all(r["equal"] == quick_equal(r["gold"], r["pred"]) and r["status"] == "quick" for r in lines)
    assert any(r["equal"] for r in lines) and not all(r["equal"] for r in lines)
    assert _run(args).exit_code == 0
    assert (out / "grades.jsonl").read_text() == text


def test_an_unknown_dataset_plugin_is_an_error_not_zero_accuracy(tmp_path):
    """A misspelled evaluate.dataset, or samples of a dataset whose plugin is not installed, made every
    extraction fail quietly: 0 % accuracy and exit 0."""
    from test_cli_errors import assert_one_error

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["evaluate", "--runs", str(FIXTURES / "teacher"), "-o", str(out),
                                      "--set", "evaluate.dataset=gsm8kk"])
    assert_one_error(result, "--set 'evaluate.dataset=gsm8kk': no datasets plugin named 'gsm8kk' "
                                     "(did you mean 'gsm8k'?)")
    assert not out.exists()

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "teacher", run)
    samples = run / "samples.jsonl"
    samples.write_text(samples.read_text().replace('"dataset": "gsm8k"', '"dataset": "gsm8k-local"'))
    result = CliRunner().invoke(cli, ["evaluate", "--runs", str(run), "-o", str(out)])
    assert_one_error(result, f"{samples}: the samples are of dataset 'gsm8k-local'",
                     "no datasets plugin named 'gsm8k-local'", "set evaluate.dataset")
    assert not (out / "report.json").exists()
    result = CliRunner().invoke(cli, ["evaluate", "--runs", str(run), "-o", str(out),
                                      "--set", "evaluate.dataset=gsm8k"])
    assert result.exit_code == 0, result.output
    from thinkfast.errors import ThinkfastError  # the Python API, without the recipe's check

    with pytest.raises(ThinkfastError, match="evaluate.dataset: no datasets plugin named 'gsm8kk'"):
        evaluate(EvaluateSection(dataset="gsm8kk"), [FIXTURES / "teacher"], output_dir=None)


def test_a_last_line_cut_short_by_a_killed_generate_is_left_out_with_a_warning(tmp_path):
    """generate drops such a line when it resumes; evaluate refused the whole run over it."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "teacher", run)
    with (run / "samples.jsonl").open("a") as fh:
        fh.write('{"problem_id": "gsm8k-train-11", "sample_index": 8, "te')
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["evaluate", "--runs", str(run), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{run / 'samples.jsonl'}:97: the last line was cut short" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["n_samples"] == 8 and any("cut short" in w for w in report["warnings"])
    # a damaged line that is not the last one (or ends in a newline) is still an error
    with (run / "samples.jsonl").open("a") as fh:
        fh.write("\n")
    result = CliRunner().invoke(cli, ["evaluate", "--runs", str(run), "-o", str(out)])
    assert result.exit_code == 2 and "samples.jsonl:97: not valid JSON" in result.output


def test_a_last_line_cut_inside_a_multibyte_character_is_a_cut_line(tmp_path):
    """samples.jsonl is written with ensure_ascii=False: a kill mid-write can split a character's UTF-8
    bytes, and that last line was 'not UTF-8 text; save the file as UTF-8' instead of a cut line."""
    from thinkfast.evaluate.runs import read_run

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "teacher", run)
    cut = '{"problem_id": "gsm8k-train-11", "sample_index": 8, "text": "3 \u00d7'.encode()
    with (run / "samples.jsonl").open("ab") as fh:
        fh.write(cut[:-1])  # the first of the two bytes of the multiplication sign
    loaded = read_run(run)
    assert loaded.meta["cut_line"] == f"{run / 'samples.jsonl'}:97"
    assert sum(len(p.texts) for p in loaded.problems) == 96


def _broken_run_json(run: Path) -> None:
    (run / "run.json").write_text('{"status": "complete", "problem_s')


def _string_seconds(run: Path) -> None:
    meta = json.loads((run / "run.json").read_text())
    meta["problem_seconds"] = {pid: f"{s} s" for pid, s in meta["problem_seconds"].items()}
    (run / "run.json").write_text(json.dumps(meta))


def _nan_seconds(run: Path) -> None:
    """Python's json reads and writes NaN; a report built on it had NaN seconds and the plots crashed."""
    meta = json.loads((run / "run.json").read_text())
    meta["problem_seconds"]["gsm8k-train-3"] = float("nan")
    (run / "run.json").write_text(json.dumps(meta))


def _infinite_sample_seconds(run: Path) -> None:
    meta = json.loads((run / "run.json").read_text())
    del meta["problem_seconds"]
    (run / "run.json").write_text(json.dumps(meta))
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    samples[0]["seconds"] = float("inf")
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


def _only_rank_shards(run: Path) -> None:
    """What a torchrun generate stopped before its first merge leaves: per-rank files, no samples.jsonl."""
    lines = (run / "samples.jsonl").read_text().splitlines(keepends=True)
    (run / "samples.rank0.jsonl").write_text("".join(lines[::2]))
    (run / "samples.rank1.jsonl").write_text("".join(lines[1::2]))
    (run / "samples.jsonl").unlink()


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "samples.jsonl").unlink(),
     "{run}: no samples.jsonl here; pass a directory written by `thinkfast generate`"),
    (_only_rank_shards, "{run}: no samples.jsonl yet, only the per-rank files of a `thinkfast generate` under "
                        "torchrun that stopped before merging them; run the same generate again with -o {run} to "
                        "finish the run and merge them"),
    (_broken_run_json, "{run}/run.json: not valid JSON ("),
    (_string_seconds, "{run}/run.json: problem_seconds must map problem ids to seconds (numbers)"),
    (_nan_seconds, "{run}/run.json: problem_seconds of problem 'gsm8k-train-3' is nan; seconds must be finite "
                   "numbers >= 0"),
    (_infinite_sample_seconds, "{run}/samples.jsonl: the samples' seconds of problem 'gsm8k-train-0' sum to inf; "
                               "seconds must be finite numbers >= 0"),
], ids=["no-samples", "only-rank-files", "run-json-not-json", "seconds-not-numbers", "seconds-nan",
        "sample-seconds-infinite"])
def test_a_run_directory_evaluate_cannot_read_is_one_error_line(tmp_path, damage, message):
    """--runs given a directory that is no generate output (the parent of the runs, say), or whose run.json is
    damaged: one line naming the file and the fix, exit 2, no report."""
    from test_cli_errors import assert_one_error

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "student", run)
    damage(run)
    out = tmp_path / "out"
    assert_one_error(_run(["--runs", str(FIXTURES / "teacher"), "--runs", str(run), "-o", str(out)]),
                     message.format(run=run))
    assert not out.exists()


def test_common_problems_with_no_problem_complete_everywhere_is_one_error_line(tmp_path):
    from test_cli_errors import assert_one_error

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "student", run)
    kept = [line for line in (run / "samples.jsonl").read_text().splitlines()
            if json.loads(line)["sample_index"] < 4]  # every problem has 4 of its 8 samples
    (run / "samples.jsonl").write_text("\n".join(kept) + "\n")
    (run / "run.json").write_text(json.dumps({"status": "running", "settings": {"n_samples": 8}}))  # interrupted
    out = tmp_path / "out"
    assert_one_error(_run(["--runs", str(FIXTURES / "teacher"), "--runs", str(run), "--common-problems",
                                  "-o", str(out)]),
                     "evaluate.common_problems: no problem is complete in every run", "finish the runs or turn "
                     "common_problems off")
    assert not out.exists()


@pytest.mark.parametrize("by_seconds", [False, True])
def test_long_model_labels_fit_in_the_legend(by_seconds, check_figure_readable):
    """Labels such as ``Llama-3.2-1B-Instruct (teacher-gsm8k)`` in three columns were wider than a one-panel
    figure, cut off at both edges; the legend now drops columns and wraps labels until it fits."""
    labels = ["meta-llama/Llama-3.2-1B-Instruct (teacher-gsm8k-long-run-name)",
              "Llamba-1B-distilled-from-Llama-3.2-1B-Instruct (student-gsm8k)",
              "MambaInLlama-hybrid-25pct-attention (hybrid-gsm8k)"]
    results = [_result(label, 0.1 * (i + 1), [0.2, 0.3, 0.4, 0.5]) for i, label in enumerate(labels)]
    fig = figure(results, "accuracy", by_seconds, "gsm8k")
    check_figure_readable(fig)
    shown = ["".join(t.get_text().split()) for t in fig.legends[0].get_texts()]  # wrapped at spaces or hyphens
    assert shown == ["".join(label.split()) for label in labels]


@pytest.mark.parametrize("by_seconds", [False, True])
def test_models_differ_by_marker_and_a_model_at_zero_is_drawn_whole(by_seconds):
    """Every model had the same round marker, so in grayscale (or for a colour-blind reader) the lines
    could only be told apart by colour; and a model at 0 % lay on the frame, its line and markers half
    clipped away. Each model now has its own marker, and lines are drawn over the frame, unclipped."""
    results = [_result("teacher", 0.3, [0.3, 0.5, 0.6, 0.7]), _result("student", 0.1, [0.0, 0.0, 0.0, 0.0])]
    fig = figure(results, "accuracy", by_seconds, "gsm8k")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["teacher"].get_marker() != lines["student"].get_marker()
    assert ax.get_ylim()[0] == 0.0 and set(lines["student"].get_ydata()) == {0.0}
    frame = max(spine.get_zorder() for spine in ax.spines.values())
    assert not lines["student"].get_clip_on() and lines["student"].get_zorder() > frame


def _untimed_copy(run: Path, to: Path) -> Path:
    """A copy of the generation directory ``run`` without any timing: no problem_seconds in run.json, no
    seconds in the samples."""
    to.mkdir()
    meta = json.loads((run / "run.json").read_text())
    del meta["problem_seconds"]
    (to / "run.json").write_text(json.dumps(meta))
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    (to / "samples.jsonl").write_text("".join(
        json.dumps({k: v for k, v in s.items() if k != "seconds"}) + "\n" for s in samples))
    return to


def test_a_run_without_timings_is_named_where_the_seconds_plots_leave_it_out(tmp_path):
    """A run whose run.json has no problem_seconds and whose samples carry no seconds cannot be placed on a
    seconds axis. It was silently missing from the accuracy-vs-seconds figure; now a warning says so (terminal
    and report.json) and the legend names it as not drawn."""
    untimed = _untimed_copy(FIXTURES / "student", tmp_path / "untimed")
    out = tmp_path / "out"
    result = _run(["--runs", str(FIXTURES / "teacher"), "--runs", str(untimed), "-o", str(out),
                   "--set", "evaluate.bootstrap=0", "--set", "evaluate.subsets=2"])
    assert result.exit_code == 0, result.output
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert [w for w in warnings if "left out of the plots against seconds" in w] == [
        f"{untimed}: run.json has no problem_seconds and its samples no seconds, so its time budget is unknown; "
        f"it is left out of the plots against seconds"]
    assert "left out of the plots against seconds" in " ".join(result.output.split())

    timed = _result("teacher", 0.3, [0.3, 0.5, 0.6, 0.7])
    series = Series([1, 2, 4, 8], [None] * 4, [0.2, 0.3, 0.4, 0.5], [None] * 4, [None] * 4)
    blind = ModelResult("untimed", "gsm8k", "run", 12, 8, None, 1.0, series, {"majority": series})
    for metric in ("coverage", "accuracy"):
        fig = figure([timed, blind], metric, True, "gsm8k")
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["teacher", "untimed (no timings: not drawn)"]
        assert [line.get_label() for line in fig.axes[0].get_lines()] == ["teacher"]


def test_a_seconds_plot_with_nothing_to_draw_removes_the_earlier_reports_files(tmp_path):
    """Evaluating into a directory that holds an earlier report: a plot that now has nothing to draw (the only
    run has no timings) must not leave the earlier figure of that name, which shows other runs, beside the
    new report.json."""
    out = tmp_path / "out"
    first = _run(["--runs", str(FIXTURES / "teacher"), "-o", str(out), "--set", "evaluate.bootstrap=0",
                  "--set", "evaluate.subsets=2"])
    assert first.exit_code == 0, first.output
    seconds_plots = sorted(p.name for p in out.glob("*-vs-seconds.*"))
    assert len(seconds_plots) == 4 and {p.rsplit(".", 1)[1] for p in seconds_plots} == {"png", "pdf"}

    untimed = _untimed_copy(FIXTURES / "teacher", tmp_path / "untimed")
    second = _run(["--runs", str(untimed), "-o", str(out), "--set", "evaluate.bootstrap=0",
                   "--set", "evaluate.subsets=2"])
    assert second.exit_code == 0, second.output
    assert list(out.glob("*-vs-seconds.*")) == []
    assert len(list(out.glob("*-vs-k.png"))) == 2 and len(list(out.glob("*-vs-k.pdf"))) == 2


def test_report_json_is_strict_json_even_with_a_non_finite_number(tmp_path, evaluated):
    """report.json is read by jq, JavaScript and Go, which reject NaN and Infinity: a non-finite number
    (here a grading rate) is written as null, and everything else round-trips exactly."""
    from thinkfast.evaluate.report import write_report

    out, _ = evaluated
    data = json.loads((out / "report.json").read_text())
    evaluation = evaluate(EvaluateSection(runs=[str(FIXTURES / "student")], bootstrap=0, subsets=2),
                          [FIXTURES / "student"], output_dir=None)
    evaluation.grading["samples_per_second"] = float("inf")
    evaluation.results[0].coverage.mean[0] = float("nan")
    write_report(evaluation, tmp_path / "report.json", extra={"seed": 0})

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    written = json.loads((tmp_path / "report.json").read_text(), parse_constant=refuse)
    assert written["grading"]["samples_per_second"] is None
    assert written["results"][0]["coverage"]["mean"][0] is None
    assert written["results"][0]["coverage"]["mean"][1:] == evaluation.results[0].coverage.mean[1:]
    assert json.loads(json.dumps(data), parse_constant=refuse) == data  # the fixture report is strict already


def test_seconds_and_rates_keep_their_digits_however_large_or_small(tmp_path):
    """A slow model's seconds per sample read as a plain number (7,993, not 7.99e+03), and grading that took
    a few milliseconds says how many, not 0.0 s."""
    run = Path(shutil.copytree(FIXTURES / "student", tmp_path / "slow"))
    meta = json.loads((run / "run.json").read_text())
    meta["problem_seconds"] = {pid: seconds * 1e5 for pid, seconds in meta["problem_seconds"].items()}
    (run / "run.json").write_text(json.dumps(meta))
    result = _run(["--runs", str(run), "-o", str(tmp_path / "out"), "--set", "evaluate.plots=false"])
    assert result.exit_code == 0, result.output
    per_sample = json.loads((tmp_path / "out" / "report.json").read_text())["results"][0][
        "generation_seconds_per_sample"]
    assert per_sample > 1000 and f"{per_sample:,.0f} s/sample" in result.output and "e+" not in result.output
    graded = re.search(r"graded (\d+) samples in (\S+) s", result.output)
    assert graded and float(graded.group(2)) > 0, result.output
