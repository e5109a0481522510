"""What a user meets when a student, dataset or kernel plugin misbehaves: one line naming the plugin, its
package, what it was asked to do and the line of its own code, not a traceback; and an exception that never
went through a plugin's code (thinkfast's own bug) is not blamed on one.

The plugins are classes of this module, registered at runtime through ``load_registry(extra_modules=...)``,
as a third-party package's entry point would register them.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_cli_errors import assert_one_error, thinkfast

from thinkfast import registry as registry_module
from thinkfast.config import from_dict, option
from thinkfast.config.common import DataSpec
from thinkfast.data import DatasetPlugin, Problem
from thinkfast.data import answers as answers_module
from thinkfast.errors import DataError
from thinkfast.kernels import KernelSet, TorchKernels, select_kernels
from thinkfast.models import ModelConfig, ThinkfastLM, build_student
from thinkfast.plugin_guard import PluginError, calling, third_party_error

HERE = Path(__file__).name
RUNS = Path(__file__).parent / "fixtures" / "evaluate"


# --- datasets -----------------------------------------------------------------------------------------------

class Arith(DatasetPlugin):
    answer_format = "gsm8k"

    def read(self, spec):
        for i in range(3):
            yield Problem(f"arith-{spec.split}-{i}", f"What is {i} + 1?", str(i + 1), f"{i} + 1 = {i + 1}")


class ReadRaises(Arith):
    def read(self, spec):
        record = {"prompt": "What is 1 + 1?"}
        yield Problem("p0", record["question"], "2")


class YieldsDicts(Arith):
    def read(self, spec):
        yield {"question": "What is 1 + 1?", "answer": "2"}


class IntAnswers(Arith):
    def read(self, spec):
        yield Problem("p0", "What is 2 + 2?", 4)


class ReturnsNothing(Arith):
    def read(self, spec):
        [Problem("p0", "What is 1 + 1?", "2")]  # forgot to return it


class RepeatsAnId(Arith):
    def read(self, spec):
        yield Problem("p0", "What is 1 + 1?", "2")
        yield Problem("p0", "What is 2 + 2?", "4")


class EmptyId(Arith):
    def read(self, spec):
        yield Problem("", "What is 1 + 1?", "2")


class LatexFormat(Arith):
    answer_format = "latex"


class NoRead(DatasetPlugin):
    """Subclasses the base but implements nothing."""


class NotADatasetPlugin:
    def read(self, spec):
        return []


class InitRaises(Arith):
    def __init__(self, options=None):
        super().__init__(options)
        raise OSError("cannot open the dataset cache")


class RaisesDataError(Arith):
    def read(self, spec):
        raise DataError("my_data.jsonl:3: missing field 'question'")
        yield


class CallsThinkfastWrongly(Arith):
    def read(self, spec):
        yield Problem("p0", "What is 1 + 1?", answers_module.normalize_answer("2", "latex"))


def assert_error_last(result, *fragments: str) -> None:
    """Exit 2, no traceback, and the last line on stderr (after the progress a command prints there) is the
    one error, with every fragment."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(f in last for f in fragments), last


def _generate(tmp_path: Path, dataset: str, *extra: str):
    return thinkfast("generate", "--model", "no/such-model", "--dataset", dataset, "--split", "test", "--limit",
                     "2", "--device", "cpu", "-o", str(tmp_path / "out"), *extra)


@pytest.mark.parametrize("component, fragments", [
    (ReadRaises, ["read() of split 'test' raised KeyError: 'question' (at ", f"{HERE}:"]),
    (YieldsDicts, ["read() yielded a dict of 2 items as item 0 of split 'test'; a problem is a "
                   "thinkfast.data.Problem(id, question, answer, solution)"]),
    (IntAnswers, ["read() yielded a problem whose answer is 4 (int) (item 0 of split 'test')"]),
    (ReturnsNothing, ["read() of split 'test' raised TypeError: 'NoneType' object is not iterable"]),
    (RepeatsAnId, ["read() gave two problems the id 'p0' (items 0 and 1 of split 'test'); each problem needs an "
                   "id of its own"]),
    (EmptyId, ["read() yielded a problem whose id is '' (item 0 of split 'test'); each problem needs a non-empty "
               "id"]),
    (LatexFormat, ["has answer_format 'latex' (str); it must be one of 'gsm8k', 'math', 'plain'"]),
    (NoRead, ["does not implement read(spec)"]),
    (NotADatasetPlugin, ["registers <class ", "not a subclass of thinkfast.data.DatasetPlugin"]),
    (InitRaises, ["creating it raised OSError: cannot open the dataset cache (at ", f"{HERE}:"]),
    (CallsThinkfastWrongly, ["read() of split 'test' raised ValueError: unknown answer format 'latex'",
                             "(raised at ", "answers.py:", "called from the plugin at ", f"{HERE}:"]),
], ids=["read-raises", "yields-dicts", "int-answer", "returns-none", "repeated-id", "empty-id", "unknown-format",
        "no-read", "not-a-subclass",
        "init-raises", "thinkfast-raises-for-the-plugin"])
def test_a_misbehaving_dataset_is_one_line_naming_it(use_plugins, tmp_path, component, fragments):
    use_plugins(datasets={"bad": component})
    assert_one_error(_generate(tmp_path, "bad"), "dataset 'bad' from <local> (runtime_plugins): ", *fragments,
                     "; fix the plugin or use another dataset")


@dataclass
class IdPrefix:
    prefix: str = option(3, "Prefix of problem ids.")  # not a string


class BadOptionsDefault(Arith):
    Options = IdPrefix


def test_a_dataset_whose_options_defaults_are_broken_is_one_line_naming_it(use_plugins, tmp_path):
    """It was 'data.options.prefix: expected a string, got 3', about a table the user never wrote."""
    use_plugins(datasets={"bad": BadOptionsDefault})
    assert_one_error(_generate(tmp_path, "bad"), "--dataset: no datasets plugin named 'bad': <local> registers it, "
                     "but the datasets component 'bad' (test_plugin_guards.BadOptionsDefault) is not registered: the "
                     "defaults of its Options break its own rules (Options.prefix: expected a string, got 3): fix "
                     "those defaults")


def test_a_dataset_plugins_own_data_error_reaches_the_user_unchanged(use_plugins, tmp_path):
    use_plugins(datasets={"bad": RaisesDataError})
    line = assert_one_error(_generate(tmp_path, "bad"))
    assert line == "error: my_data.jsonl:3: missing field 'question'"


def test_records_that_repeat_an_id_are_a_data_error_of_a_builtin_dataset(tmp_path):
    """The built-in ``jsonl`` takes ids from the records: two problems with one id are the data's fault. They were
    generated into one problem's samples, and only ``evaluate`` stopped, on its reference answers."""
    data = tmp_path / "qa.jsonl"
    data.write_text('{"id": "a", "question": "1+1?", "answer": "2"}\n{"id": "a", "question": "2+2?", "answer": "4"}\n')
    result = thinkfast("generate", "--model", "no/such-model", "--dataset", "jsonl", "--data-path", str(data),
                       "--device", "cpu", "-o", str(tmp_path / "out"))
    assert_one_error(result, "dataset 'jsonl': two problems have the id 'a' (items 0 and 1 of split 'qa' of ",
                     "give every record a unique id")
    assert not (tmp_path / "out" / "samples.jsonl").exists()


def test_a_good_runtime_dataset_passes_the_guard(use_plugins, tmp_path):
    use_plugins(datasets={"arith": Arith})
    from thinkfast.data import load_problems

    plugin, problems = load_problems(from_dict(DataSpec, {"dataset": "arith", "offset": 1}, source="test"))
    assert [p.id for p in problems] == ["arith-train-1", "arith-train-2"]
    assert plugin.extract_answer("so #### 3") == "3" and plugin.answer_format == "gsm8k"


class OwnIterYieldsDicts(Arith):
    """Applies offset and limit itself, as ``iter_problems`` must."""

    def iter_problems(self, spec):
        for i in range(spec.offset, spec.offset + spec.limit):
            yield {"id": f"p{i}", "question": "?"}


def test_a_bad_item_of_a_plugins_own_iter_problems_is_numbered_from_the_offset(use_plugins, tmp_path):
    use_plugins(datasets={"bad": OwnIterYieldsDicts})
    assert_one_error(_generate(tmp_path, "bad", "--set", "generate.data.offset=3"),
                     "iter_problems() yielded a dict of 2 items as item 3 of split 'test'")


class WrongResponses(Arith):
    def response_text(self, problem):
        return [problem.solution]


def test_a_dataset_response_that_is_not_text_is_named_before_training(use_plugins):
    from thinkfast.data.training import training_data

    use_plugins(datasets={"bad": WrongResponses})
    spec = from_dict(DataSpec, {"dataset": "bad", "split": "train"}, source="test")
    with pytest.raises(PluginError, match=r"dataset 'bad' from <local> \(runtime_plugins\): response_text\(\) "
                                          r"returned a list of 1 item for problem 'arith-train-0'"):
        training_data(spec)


class NumericExtractor(Arith):
    def extract_answer(self, text):
        return 72


class ExtractorRaises(Arith):
    def extract_answer(self, text):
        return text.split("####")[1].strip()


@pytest.mark.parametrize("component, fragments", [
    (NumericExtractor, ["extract_answer() returned 72 (int); it must return the answer as a string, or None"]),
    (ExtractorRaises, ["extract_answer() raised IndexError: list index out of range (at ", f"{HERE}:"]),
], ids=["int", "raises"])
def test_evaluate_warns_of_a_dataset_whose_extract_answer_misbehaves(use_plugins, tmp_path, component, fragments):
    """Extraction that raises does not stop the grading (garbage text must not), but it is no longer silent:
    a warning says how many samples it cost and names the plugin and the line of its code."""
    use_plugins(datasets={"bad": component})
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[evaluate]\nruns = ["{RUNS / "teacher"}"]\nbootstrap = 0\ndataset = "bad"\nplots = false\n')
    result = thinkfast("evaluate", str(recipe), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in " ".join(result.stdout.split()).split("warning: ")[1:]]
    assert warning.startswith("extracting the answers of dataset 'gsm8k' failed on ")  # the samples' dataset
    assert " sample(s), which count as unanswered; the first failure: dataset 'bad' from <local> " \
           "(runtime_plugins): " in warning
    for fragment in fragments:
        assert fragment in warning


def test_a_failing_extraction_is_named_without_resolving_paths_again_for_each_sample(use_plugins, monkeypatch):
    """evaluate may meet an extract_answer that raises on every one of 100k samples: after the first failure,
    naming the plugin and its line reads no file path from the disk again (the files are resolved once)."""
    import os

    from thinkfast.data import get_plugin

    use_plugins(datasets={"bad": ExtractorRaises})
    plugin = get_plugin("bad")
    with pytest.raises(PluginError, match="extract_answer\\(\\) raised IndexError"):
        plugin.extract_answer("no answer here")
    resolved: list[str] = []
    realpath = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda path, **kw: resolved.append(path) or realpath(path, **kw))
    for _ in range(20):
        with pytest.raises(PluginError, match=f"\\(at .*{HERE}:"):
            plugin.extract_answer("no answer here")
    assert resolved == []


def test_evaluate_extracts_with_the_dataset_options_the_run_was_generated_with(tmp_path):
    """A ``jsonl`` run generated with ``answer_format = "gsm8k"`` is graded with that format (its last number),
    not the plugin's default ("plain": the last line), as ``run.json``'s settings record."""
    run = tmp_path / "run"
    run.mkdir()
    sample = {"problem_id": "qa-0", "text": "The total is 72 apples.\nDone", "answer": "72", "dataset": "jsonl",
              "num_tokens": 9, "seconds": 0.5}
    (run / "samples.jsonl").write_text("".join(json.dumps({**sample, "sample_index": i}) + "\n" for i in range(2)))
    settings = {"dataset": "jsonl", "dataset_options": {"answer_format": "gsm8k"}, "n_samples": 2}
    (run / "run.json").write_text(json.dumps({"model": "m", "settings": settings, "problem_seconds": {"qa-0": 1.0}}))
    result = thinkfast("evaluate", "--runs", str(run), "--set", "evaluate.bootstrap=0", "--set",
                       "evaluate.plots=false", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    (model,) = json.loads((tmp_path / "out" / "report.json").read_text())["results"]
    assert model["coverage"]["mean"] == [1.0, 1.0]

    settings["dataset_options"] = {"answer_fromat": "gsm8k"}
    (run / "run.json").write_text(json.dumps({"model": "m", "settings": settings, "problem_seconds": {"qa-0": 1.0}}))
    result = thinkfast("evaluate", "--runs", str(run), "-o", str(tmp_path / "out2"))
    assert_one_error(result, f"{run / 'run.json'}: settings.dataset_options do not fit the dataset plugin as "
                             f"installed now: ", "answer_fromat")


def test_the_verifier_checks_with_the_dataset_options_the_run_was_generated_with(tmp_path):
    """The ``verifier`` in mode 'check' creates the samples' dataset plugin as ``generate`` did: a ``jsonl`` run
    with ``answer_format = "gsm8k"`` is checked by its last number (with the default, "plain", the plugin has
    no check and evaluate stopped)."""
    run = tmp_path / "run"
    run.mkdir()
    texts = ["The total is 72 apples.\nDone", "It makes 71.\nDone"]
    (run / "samples.jsonl").write_text("".join(
        json.dumps({"problem_id": "qa-0", "sample_index": i, "text": text, "answer": "72", "dataset": "jsonl",
                    "num_tokens": 9, "seconds": 0.5}) + "\n" for i, text in enumerate(texts)))
    settings = {"dataset": "jsonl", "dataset_options": {"answer_format": "gsm8k"}, "n_samples": 2}
    (run / "run.json").write_text(json.dumps({"model": "m", "settings": settings, "problem_seconds": {"qa-0": 1.0}}))
    recipe = tmp_path / "r.toml"
    recipe.write_text('[evaluate]\nbootstrap = 0\nplots = false\n'
                      '[[evaluate.aggregators]]\nname = "verifier"\noptions = { mode = "check" }\n')
    result = thinkfast("evaluate", str(recipe), "--runs", str(run), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    (model,) = json.loads((tmp_path / "out" / "report.json").read_text())["results"]
    assert model["accuracy"]["verifier"]["mean"] == [0.5, 1.0]  # k = 1: one of two right; k = 2: picks 72


def test_evaluate_stops_on_a_dataset_plugin_that_cannot_be_created(use_plugins, tmp_path):
    """Before, the error was swallowed with every extraction, and every model scored 0 %."""
    use_plugins(datasets={"bad": InitRaises})
    result = thinkfast("evaluate", "--runs", str(RUNS / "teacher"), "--set", "evaluate.dataset=bad", "-o",
                       str(tmp_path / "out"))
    assert_one_error(result, "dataset 'bad' from <local> (runtime_plugins): creating it raised OSError: cannot "
                             "open the dataset cache (at ")


class CheckRaises(Arith):
    def check(self, problem, text):
        return len(text) / 0 > 1


def test_a_dataset_check_that_raises_inside_the_verifier_names_the_dataset(use_plugins, tmp_path):
    """The built-in verifier calls the samples' dataset plugin's ``check``: its exception is the dataset's
    (a third-party plugin), not a bug of the built-in aggregator that called it."""
    use_plugins(datasets={"bad": CheckRaises})
    run = tmp_path / "run"
    shutil.copytree(RUNS / "teacher", run)
    samples = run / "samples.jsonl"
    samples.write_text(samples.read_text().replace('"dataset": "gsm8k"', '"dataset": "bad"'))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[evaluate]\nruns = ["{run}"]\nbootstrap = 0\nplots = false\n[[evaluate.aggregators]]\n'
                      f'name = "verifier"\noptions = {{ mode = "check" }}\n')
    assert_one_error(thinkfast("evaluate", str(recipe), "-o", str(tmp_path / "out")),
                     "dataset 'bad' from <local> (runtime_plugins): check() raised ZeroDivisionError: division by "
                     "zero (at ", f"{HERE}:", "; fix the plugin or use another dataset")


# --- students -----------------------------------------------------------------------------------------------

def _teacher() -> ThinkfastLM:
    config = ModelConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2,
                         num_kv_heads=1, head_dim=8)
    return ThinkfastLM(config)


class BuildRaises:
    def build(self, teacher, options):
        raise RuntimeError(f"no SSM init for {teacher.config.num_layers} layers")


class BuildsNothing:
    def build(self, teacher, options):
        teacher.config.replace(student="nothing")


class SmallerVocabulary:
    def build(self, teacher, options):
        return ThinkfastLM(teacher.config.replace(vocab_size=10))


class NoBuild:
    pass


@pytest.mark.parametrize("component, fragment", [
    (BuildRaises, "build() raised RuntimeError: no SSM init for 2 layers (at "),
    (BuildsNothing, "build() returned None; it must return a thinkfast.models.ThinkfastLM built from the teacher"),
    (SmallerVocabulary, "build() returned a model with a vocabulary of 10 tokens; the teacher's has 50"),
    (NoBuild, "build() raised AttributeError: 'NoBuild' object has no attribute 'build'"),
], ids=["raises", "returns-none", "vocabulary", "no-build"])
def test_a_misbehaving_student_is_one_error_naming_it(use_plugins, component, fragment):
    use_plugins(students={"bad": component})
    with pytest.raises(PluginError) as caught:
        build_student(_teacher(), "bad")
    assert str(caught.value).startswith(f"student 'bad' from <local> (runtime_plugins): {fragment}")
    assert str(caught.value).endswith("; fix the plugin or choose another student.kind")


def test_distill_reports_a_student_plugin_that_raises_in_one_line(use_plugins, tiny_llama_dir, tmp_path):
    use_plugins(students={"bad": BuildRaises})
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent(f"""
        [run]
        device = "cpu"
        output_dir = "{tmp_path / 'out'}"
        [teacher]
        model = "{tiny_llama_dir}"
        [student]
        kind = "bad"
        [[distill.stages]]
        kind = "sft"
        steps = 1
        data = {{ dataset = "synthetic-arith", limit = 2 }}
    """))
    assert_error_last(thinkfast("distill", str(recipe)), "student 'bad' from <local> (runtime_plugins): build() "
                     "raised RuntimeError: no SSM init for 4 layers (at ", f"{HERE}:")


# --- kernels ------------------------------------------------------------------------------------------------

class AttentionOnly(KernelSet):
    name = "mine"
    operations = ("attention",)

    def attention_prefill(self, q, k, v, *, scale, seq_idx=None):
        return TorchKernels().attention_prefill(q, k, v, scale=scale, seq_idx=seq_idx)

    def attention_decode(self, q, k, v, k_cache, v_cache, positions, *, scale):
        return TorchKernels().attention_decode(q, k, v, k_cache, v_cache, positions, scale=scale)


class AvailabilityRaises(AttentionOnly):
    @classmethod
    def availability(cls, device, operation=None):
        import flash_attn_nonexistent  # noqa: F401

        return None


class PriorityText(AttentionOnly):
    @classmethod
    def priority(cls, operation, device):
        return "high"


class HalfAttention(KernelSet):
    operations = ("attention",)

    def attention_prefill(self, q, k, v, *, scale, seq_idx=None):
        return q


class UnknownOperation(AttentionOnly):
    operations = ("attention", "mlp")


class PrefillExplodes(AttentionOnly):
    def attention_prefill(self, q, k, v, *, scale, seq_idx=None):
        raise RuntimeError(f"no kernel for head_dim {q.shape[-1]}")


@pytest.mark.parametrize("component, pinned, fragment", [
    (AvailabilityRaises, {}, "availability('cpu', 'attention'), which must never raise, raised "
                             "ModuleNotFoundError: No module named 'flash_attn_nonexistent' (at "),
    (AvailabilityRaises, {"attention": "bad"}, "availability('cpu', 'attention'), which must never raise, raised "),
    (PriorityText, {}, "priority('attention', 'cpu') returned 'high' (str); it must return a number"),
    (HalfAttention, {}, "lists the operation 'attention' but does not implement attention_decode"),
    (UnknownOperation, {}, "lists operations ('attention', 'mlp'); it must be a tuple of some of ssm, conv, "
                           "attention"),
], ids=["availability-raises-auto", "availability-raises-pinned", "priority-text", "half-an-operation",
        "unknown-operation"])
def test_a_misbehaving_kernel_plugin_is_one_error_naming_it(use_plugins, component, pinned, fragment):
    use_plugins(kernels={"bad": component})
    with pytest.raises(PluginError) as caught:
        select_kernels(pinned, "cpu")
    assert str(caught.value).startswith(f"kernel plugin 'bad' from <local> (runtime_plugins): {fragment}")


def test_a_pinned_third_party_kernel_is_used(use_plugins):
    use_plugins(kernels={"mine": AttentionOnly})
    assert select_kernels({"attention": "mine"}, "cpu").names()["attention"] == "mine"


def _profile_with_kernel(tmp_path: Path, kernel: str, env: dict | None = None):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[kernels]\nattention = "{kernel}"\n')
    from click.testing import CliRunner

    from thinkfast.cli import cli

    return CliRunner(env=env).invoke(cli, ["profile", str(recipe), "--models", "tiny-llama", "--batch", "1",
                                           "--seqlen", "16", "--device", "cpu", "-o", str(tmp_path / "out")],
                                     prog_name="thinkfast", catch_exceptions=False)


def test_a_third_party_kernel_raising_inside_the_model_is_one_line_naming_it(use_plugins, tmp_path):
    """The operations run inside the forward pass, unwrapped; the CLI names the plugin from the traceback."""
    use_plugins(kernels={"bad": PrefillExplodes})
    assert_error_last(_profile_with_kernel(tmp_path, "bad"), "kernel plugin 'bad' from <local> (runtime_plugins): "
                     "raised RuntimeError: no kernel for head_dim 16 (at ", f"{HERE}:",
                     "; fix the plugin or pin other kernels in [kernels]")


def test_thinkfast_traceback_prints_the_plugins_traceback_above_the_line(use_plugins, tmp_path):
    use_plugins(kernels={"bad": PrefillExplodes})
    result = _profile_with_kernel(tmp_path, "bad", env={"THINKFAST_TRACEBACK": "1"})
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise RuntimeError(f"no kernel for head_dim {q.shape[-1]}")' in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: kernel plugin 'bad' from <local>")


# --- what is not the plugin's fault --------------------------------------------------------------------------

def test_an_exception_that_never_went_through_the_plugin_is_not_blamed_on_it():
    """thinkfast's own code raising inside a guarded call (no frame of the plugin's code on the traceback) keeps
    its exception, and the CLI's last resort names no plugin for it. The plugin here is a class of ``click``: its
    code is click's folder, which the raising code is not in."""
    import click

    from thinkfast.registry import PluginEntry, Registry

    entry = PluginEntry("datasets", "clicky", click.Command, "clicky-pkg", "1.0", "click")
    with pytest.raises(ValueError, match="unknown answer format") as caught:
        with calling(entry, "read()"):
            answers_module.extract_answer("#### 3", "latex")
    registry = Registry()
    registry.add("datasets", "clicky", click.Command, "clicky-pkg", "1.0", "click")
    before = registry_module.set_registry(registry)
    try:
        assert third_party_error(caught.value) is None
    finally:
        registry_module.set_registry(before)


def test_a_builtin_plugins_failure_is_called_a_thinkfast_bug(use_plugins, tmp_path):
    registry = use_plugins()
    entry = registry.entry("datasets", "synthetic-arith")
    from thinkfast.plugin_guard import plugin_error

    message = str(plugin_error(entry, "read() raised KeyError: 'x'"))
    assert message.startswith("dataset 'synthetic-arith' from thinkfast ")
    assert "bug of thinkfast's built-in plugin" in message and "THINKFAST_TRACEBACK=1" in message
