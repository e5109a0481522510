"""The command line as a user meets it: exit codes, messages, plugins from other packages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def thinkfast(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (python -m thinkfast, same interpreter)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "thinkfast", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The two fixture packages, pip-installed (with their entry points) into a private folder.

    Each is built from a copy: building in tests/fixtures leaves build/ and *.egg-info there, and a later
    install would take modules from that stale build/lib even after they were removed from the source."""
    import shutil

    site = tmp_path_factory.mktemp("site")
    sources = tmp_path_factory.mktemp("plugin_sources")
    for package in ("thinkfast-example-aggregator", "thinkfast-broken-plugin"):
        source = shutil.copytree(FIXTURES / package, sources / package,
                                 ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
             "--target", str(site), str(source)],
            check=True, capture_output=True, timeout=300,
        )
    return site


def test_help_documents_every_subcommand():
    result = thinkfast("--help")
    assert result.returncode == 0
    for name in ("distill", "generate", "evaluate", "profile", "plugins", "recipe"):
        assert name in result.stdout


def test_validate_reports_each_problem_without_traceback(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(textwrap.dedent("""
        [generate]
        n_sampels = 4
        temperature = "hot"

        [[evaluate.aggregators]]
        name = "majorty"
    """))
    result = thinkfast("recipe", "validate", str(recipe))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "3 errors" in result.stderr
    assert f"{recipe}: generate.n_sampels: unknown key (did you mean 'n_samples'?)" in result.stderr
    assert f"{recipe}: generate.temperature: expected a number, got 'hot'" in result.stderr
    assert f"{recipe}: evaluate.aggregators[0].name: no aggregators plugin named 'majorty' " \
           "(did you mean 'majority'?)" in result.stderr


def test_validate_accepts_a_good_recipe_and_show_fills_defaults(tmp_path):
    recipe = tmp_path / "good.toml"
    recipe.write_text('[generate]\nn_samples = 4\n')
    assert thinkfast("recipe", "validate", str(recipe)).returncode == 0
    shown = thinkfast("recipe", "show", str(recipe), "--set", "run.seed=7")
    assert shown.returncode == 0
    assert "n_samples = 4" in shown.stdout and "seed = 7" in shown.stdout and "top_p = 1.0" in shown.stdout


def test_bad_override_is_a_clean_error(tmp_path):
    recipe = tmp_path / "good.toml"
    recipe.write_text("")
    result = thinkfast("recipe", "validate", str(recipe), "--set", "oops")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "KEY.PATH=VALUE" in result.stderr


def test_third_party_aggregator_is_listed_and_selectable(plugin_site, tmp_path):
    env = {"PYTHONPATH": str(plugin_site)}
    listed = thinkfast("plugins", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    ours = [p for p in data["plugins"] if p["name"] == "first-answer"]
    assert ours == [{"family": "aggregators", "name": "first-answer", "package": "thinkfast-example-aggregator",
                     "version": "0.2.0", "module": "thinkfast_example_aggregator"}]
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[evaluate.aggregators]]\nname = "first-answer"\noptions = { skip_empty = false }\n')
    assert thinkfast("recipe", "validate", str(recipe), env=env).returncode == 0
    # without the package it is an unknown name
    assert thinkfast("recipe", "validate", str(recipe)).returncode == 2


def test_third_party_aggregator_runs_in_evaluate(plugin_site, tmp_path):
    runs = FIXTURES / "evaluate"
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent(f"""
        [evaluate]
        runs = ["{runs / 'teacher'}"]
        subsets = 5
        bootstrap = 0
        [[evaluate.aggregators]]
        name = "first-answer"
        [[evaluate.aggregators]]
        name = "majority"
    """))
    out = tmp_path / "out"
    result = thinkfast("evaluate", str(recipe), "-o", str(out), env={"PYTHONPATH": str(plugin_site)})
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    (model,) = report["results"]
    assert {"first-answer", "majority"} <= set(model["accuracy"])
    first, majority = model["accuracy"]["first-answer"], model["accuracy"]["majority"]
    # at k=1 both aggregators see one sample: they must agree exactly
    assert first["mean"][0] == pytest.approx(majority["mean"][0])


def test_broken_plugin_warns_and_the_cli_keeps_working(plugin_site):
    result = thinkfast("plugins", "--json", env={"PYTHONPATH": str(plugin_site)})
    assert result.returncode == 0
    assert "warning: plugin broken = thinkfast_broken_plugin" in result.stderr
    data = json.loads(result.stdout)
    broken, misnamed = data["load_errors"]
    assert broken["package"] == "thinkfast-broken-plugin" and "broken on purpose" in broken["error"]
    assert any(p["name"] == "majority" for p in data["plugins"])
    # where the plugin's import failed, and what to fix when the entry point names no module
    assert "(at " in broken["error"] and "thinkfast_broken_plugin.py:3)" in broken["error"]
    assert misnamed["entry_point"] == "misnamed = thinkfast_broken_plugin_typo"
    assert "the entry point names module 'thinkfast_broken_plugin_typo', which is not installed: correct " \
           "[project.entry-points.thinkfast] in thinkfast-broken-plugin's pyproject.toml" in misnamed["error"]


def test_the_plugins_table_lists_each_load_error_once(plugin_site):
    result = thinkfast("plugins", env={"PYTHONPATH": str(plugin_site)})
    assert result.returncode == 0
    assert (result.stdout + result.stderr).count("plugin broken = thinkfast_broken_plugin") == 1, result.stderr


def test_allow_list_restricts_third_party_plugins(plugin_site):
    env = {"PYTHONPATH": str(plugin_site), "THINKFAST_PLUGINS": ""}
    data = json.loads(thinkfast("plugins", "--json", env=env).stdout)
    assert not data["load_errors"]
    assert {p["package"] for p in data["plugins"]} == {"thinkfast"}
    env["THINKFAST_PLUGINS"] = "example_aggregator"
    data = json.loads(thinkfast("plugins", "--json", env=env).stdout)
    assert "first-answer" in {p["name"] for p in data["plugins"]} and not data["load_errors"]


@pytest.mark.parametrize("named, flag, expected", [
    ("", None, "runs/generate"),            # no run name: one directory per subcommand
    ('name = "exp1"', None, "runs/exp1"),
    ('output_dir = "out/x"', None, "out/x"),
    ('name = "exp1"', "cli/dir", "cli/dir"),
])
def test_default_output_directory(tmp_path, named, flag, expected):
    from thinkfast.cli.options import resolve_output_dir
    from thinkfast.config.loader import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text(f"[run]\n{named}\n")
    loaded = load_recipe(recipe)
    assert resolve_output_dir(loaded, Path(flag) if flag else None, "generate") == Path(expected)
    if not named:
        assert resolve_output_dir(loaded, None, "evaluate") == Path("runs/evaluate")


def test_ctrl_c_while_grading_prints_one_line_and_keeps_finished_chunks(tmp_path):
    """Ctrl-C in a terminal signals every process of the foreground group, grading workers included:
    only the parent reports it, in one line, and the verdicts of every grading chunk finished before the
    interrupt stay in grades.jsonl, so that grading those problems again asks the pool nothing."""
    from thinkfast.evaluate.engine import registry_extractor
    from thinkfast.evaluate.equivalence import Check
    from thinkfast.evaluate.grading import CHUNK, GradeCache, Grader
    from thinkfast.evaluate.runs import read_run

    run = tmp_path / "latex"
    run.mkdir()
    answers = ["\\frac{1}{2}", "0.5", "\\frac{2}{4}", "\\sqrt{2}", "2^{1/2}", "x^2+2x+1", "(x+1)^2", "3\\pi"]
    problems = 200
    assert problems > 3 * CHUNK  # chunks left to grade after the first one: the run is still going at the signal
    with (run / "samples.jsonl").open("w") as fh:
        for i in range(problems):  # every answer distinct per problem: all of them go through math-verify
            for j in range(16):
                text = f"so $\\boxed{{{answers[(i + j) % len(answers)]}+{i}}}$"
                fh.write(json.dumps({"problem_id": f"m{i}", "sample_index": j, "text": text, "answer": f"0.5+{i}",
                                     "dataset": "math500"}) + "\n")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "thinkfast", "evaluate", "--runs", str(run), "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    # the second chunk's first verdict (its reference read as an answer, written before its pool checks):
    # the first chunk, both rounds of checks, is finished and recorded
    second_chunk_started = f'"gold": "0.5+{CHUNK}"'
    grades, deadline = out / "grades.jsonl", time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and not (
            grades.exists() and second_chunk_started in grades.read_text()):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert stderr.strip() == "interrupted; anything already written is kept"
    assert "Traceback" not in stdout and not (out / "report.json").exists()

    lines = grades.read_text().splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)  # no line cut short
    assert any(json.loads(line)["status"] == "ok" for line in lines)  # math-verify verdicts among them

    class NoPool:
        """A pool that records what it is asked; every verdict must come from grades.jsonl."""

        def __init__(self):
            self.asked: list[tuple[str, str]] = []

        def check(self, pairs, on_result=None):
            self.asked.extend(pairs)
            return [Check(False, "error")] * len(pairs)

    first_chunk = read_run(run).problems[:CHUNK]
    assert [p.problem_id for p in first_chunk] == [f"m{i}" for i in range(CHUNK)]
    pool = NoPool()
    graded = Grader(registry_extractor(), pool, GradeCache(grades)).grade(first_chunk)
    assert pool.asked == [] and len(graded) == CHUNK


def test_plugin_table_cuts_nothing_at_80_columns():
    """Piped, the table is 80 columns wide: long module names wrap instead of ending in an ellipsis."""
    result = thinkfast("plugins", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout and max(map(len, result.stdout.splitlines())) <= 80
    modules = {p["module"] for p in json.loads(thinkfast("plugins", "--json").stdout)["plugins"]}
    column = "".join(line.split("│")[5].strip() for line in result.stdout.splitlines() if line.startswith("│"))
    assert all(module in column for module in modules)
