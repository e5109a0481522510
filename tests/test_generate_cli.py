"""`thinkfast generate` end to end on CPU: a tiny Llama teacher dir, real GSM8K lines, the real tokenizer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_run import free_port
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    returncode: int
    stderr: str


def thinkfast(*args: str) -> Result:
    """Run the CLI in this process (imports are paid once); exit code and stderr as a subprocess would give."""
    from thinkfast.cli import cli

    result = CliRunner().invoke(cli, list(args), prog_name="thinkfast")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stderr)


def _args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--model", str(model), "--dataset", "gsm8k", "--data-path", str(data), "--split", "train",
            "--limit", "3", "--n", "2", "--max-new-tokens", "6", "--batch-size", "3", "--template", "plain",
            "--temperature", "1.0", "--device", "cpu", "-o", str(out), *extra]


def _samples(out: Path) -> dict[tuple[str, int], dict]:
    lines = (out / "samples.jsonl").read_text().splitlines()
    return {(r["problem_id"], r["sample_index"]): r for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def first_run(tiny_llama_dir, gsm8k_train_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "run"
    result = thinkfast(*_args(tiny_llama_dir, gsm8k_train_path, out))
    assert result.returncode == 0, result.stderr
    return out


def test_generate_writes_samples_and_run_json(first_run):
    samples = _samples(first_run)
    assert len(samples) == 6 and {k[1] for k in samples} == {0, 1}
    for rec in samples.values():
        assert rec["finish_reason"] in ("eos", "length", "stop")
        assert 1 <= rec["num_tokens"] <= 6 and isinstance(rec["text"], str)
        assert rec["dataset"] == "gsm8k" and rec["answer"] and rec["question"] and rec["seconds"] > 0
    run = json.loads((first_run / "run.json").read_text())
    assert run["status"] == "complete" and run["num_samples"] == 6 and run["num_problems"] == 3
    assert run["device"].startswith("cpu") and run["dtype"] == "float32" and run["batch_size"] == 3
    assert run["generated_tokens"] == sum(r["num_tokens"] for r in samples.values())
    assert run["wall_seconds"] > 0 and run["tokens_per_second"] > 0
    assert run["compiled"] is False and run["compile_seconds"] == 0 and run["compile_error"] is None  # CPU: eager
    assert run["prefill_compile_errors"] == {}
    engine = run["engine"]  # where the time went: prefill, decode (with the hand-out of samples), cycles
    assert engine["cycles"] > 0 and engine["decode_steps"] == engine["cycles"] * run["check_every"]
    assert engine["prefills"] >= run["num_problems"] and 0 < engine["prefill_seconds"] < run["wall_seconds"]
    assert set(run["problem_seconds"]) == {k[0] for k in samples}


def test_resume_generates_only_missing_samples_and_reproduces_them(first_run, tiny_llama_dir, gsm8k_train_path,
                                                                   tmp_path, monkeypatch):
    full = _samples(first_run)
    out = tmp_path / "resumed"
    out.mkdir()
    kept = (first_run / "samples.jsonl").read_text().splitlines()[:2]
    (out / "samples.jsonl").write_text("\n".join(kept) + "\n" + kept[2 - 1][:15])  # + a torn line
    (out / "run.json").write_text((first_run / "run.json").read_text())
    result = thinkfast(*_args(tiny_llama_dir, gsm8k_train_path, out))
    assert result.returncode == 0, result.stderr
    resumed = _samples(out)
    assert {k: r["text"] for k, r in resumed.items()} == {k: r["text"] for k, r in full.items()}
    assert json.loads((out / "run.json").read_text())["new_samples"] == 4
    # nothing left to do: a third run adds nothing, does not load the model to find that out, and leaves the
    # summary of the run that did the work as it is
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run loaded its model again")

    monkeypatch.setattr("thinkfast.models.teacher.load_any", refuse)
    summary = (out / "run.json").read_text()
    again = thinkfast(*_args(tiny_llama_dir, gsm8k_train_path, out, "--batch-size", "5"))
    assert again.returncode == 0 and "(0 new, 0 tokens" in again.stderr, again.stderr
    assert (out / "run.json").read_text() == summary
    run = json.loads(summary)
    assert run["new_samples"] == 4 and run["batch_size"] == 3 and run["engine"]["cycles"] > 0
    assert {k: r["text"] for k, r in _samples(out).items()} == {k: r["text"] for k, r in full.items()}


def test_a_resume_notices_that_the_worked_examples_changed(tiny_llama_dir, gsm8k_train_path, tmp_path):
    """run.json records each few-shot example's id and a digest of its text: editing the train file the
    examples come from (the ids, which count lines, stay the same) makes a resume refuse, naming them."""
    lines = gsm8k_train_path.read_text().splitlines()
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (data / "test.jsonl").write_text("\n".join(lines[10:14]) + "\n")
    out = tmp_path / "out"
    args = ["generate", "--model", str(tiny_llama_dir), "--dataset", "gsm8k", "--data-path", str(data), "--split",
            "test", "--few-shot", "1", "--n", "1", "--max-new-tokens", "2", "--template", "plain", "--device",
            "cpu", "-o", str(out)]
    assert thinkfast(*args, "--limit", "1").returncode == 0
    (example,) = json.loads((out / "run.json").read_text())["settings"]["few_shot_examples"]
    assert example.startswith("gsm8k-train-0 ") and len(example.split()[1]) == 10
    assert thinkfast(*args, "--limit", "2").returncode == 0  # same examples: extended

    (data / "train.jsonl").write_text("\n".join(lines[1:3]) + "\n")  # another first problem, same id
    result = thinkfast(*args, "--limit", "3")
    assert result.returncode == 2
    assert f"few_shot_examples: ['{example}'] -> ['gsm8k-train-0 " in result.stderr
    assert "the worked examples shown in every prompt would differ" in result.stderr
    assert len(_samples(out)) == 2  # nothing written


def test_extending_a_finished_run_marks_it_running_until_its_summary_is_written(
        first_run, tiny_llama_dir, gsm8k_train_path, tmp_path, monkeypatch):
    import shutil

    from thinkfast.evaluate.runs import read_run, run_warnings
    from thinkfast.generate import runner

    out = tmp_path / "extended"
    shutil.copytree(first_run, out)
    finished = json.loads((out / "run.json").read_text())
    more = [a if a != "3" else "4" for a in _args(tiny_llama_dir, gsm8k_train_path, out)]  # --limit 4

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(runner, "_generate_shard", interrupted)
        assert thinkfast(*more).returncode == 130
        first_marker = (out / "run.json").read_text()
        assert thinkfast(*more).returncode == 130  # interrupted again: the marker is kept as it is
        assert (out / "run.json").read_text() == first_marker
    marker = json.loads((out / "run.json").read_text())
    assert marker["status"] == "running" and "problem_seconds" not in marker
    assert marker["previous_summary"] == finished  # the earlier summary is kept whole
    assert marker["total_wall_seconds"] == finished["total_wall_seconds"]
    assert marker["model"] == finished["model"]  # evaluate still labels the run by its model
    assert any("did not finish" in w for w in run_warnings([read_run(out)]))

    assert thinkfast(*more).returncode == 0
    summary = json.loads((out / "run.json").read_text())
    assert summary["status"] == "complete" and summary["num_problems"] == 4 and summary["new_samples"] == 2
    assert summary["total_wall_seconds"] == pytest.approx(finished["total_wall_seconds"] + summary["wall_seconds"])
    assert "previous_summary" not in summary and len(summary["problem_seconds"]) == 4


def test_a_label_written_into_run_json_by_hand_survives_extending_the_run(first_run, tiny_llama_dir,
                                                                            gsm8k_train_path, tmp_path):
    """evaluate names a run by run.json's label; before, the extended run's summary dropped it."""
    import shutil

    out = tmp_path / "labelled"
    shutil.copytree(first_run, out)
    run = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**run, "label": "tiny teacher, T=1"}))
    more = [a if a != "3" else "4" for a in _args(tiny_llama_dir, gsm8k_train_path, out)]  # --limit 4
    assert thinkfast(*more).returncode == 0
    summary = json.loads((out / "run.json").read_text())
    assert summary["num_problems"] == 4 and summary["label"] == "tiny teacher, T=1"


def test_engine_settings_come_from_the_recipe(tiny_llama_dir, gsm8k_train_path, tmp_path, monkeypatch):
    """--state-dtype and the [generate] engine keys are the engine's settings, not only what run.json records
    (samples do not depend on most of them: only the engine shows whether they arrived)."""
    import torch

    from thinkfast.generate import runner

    made = []

    class Recording(runner.Engine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(runner, "Engine", Recording)
    out = tmp_path / "out"
    keys = {"check_every": 3, "prefill_tokens": 100, "prefill_padding": 0.5, "prefill_bucket": 8,
            "overlap_prefill": True}
    sets = [arg for key, value in keys.items() for arg in ("--set", f"generate.{key}={str(value).lower()}")]
    result = thinkfast(*_args(tiny_llama_dir, gsm8k_train_path, out, "--state-dtype", "bfloat16", "--top-k", "20",
                              *sets))
    assert result.returncode == 0, result.stderr
    (engine,) = made
    settings = engine.settings
    assert settings.state_dtype == torch.bfloat16 and settings.dtype == torch.float32
    assert {key: getattr(settings, key) for key in keys} == keys
    assert (settings.batch_size, settings.max_new_tokens, settings.seed) == (3, 6, 0)
    assert (settings.sampling.temperature, settings.sampling.top_k) == (1.0, 20)
    assert json.loads((out / "run.json").read_text())["state_dtype"] == "bfloat16"


def test_a_limit_beyond_the_data_is_said(tiny_llama_dir, gsm8k_train_path, tmp_path):
    short = tmp_path / "two.jsonl"
    short.write_text("".join(gsm8k_train_path.read_text().splitlines(keepends=True)[:2]))
    result = thinkfast(*_args(tiny_llama_dir, short, tmp_path / "out"))  # --limit 3
    assert result.returncode == 0, result.stderr
    assert "limit is 3" in result.stderr and "only 2 problems" in result.stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["num_problems"] == 2


def test_resume_with_other_settings_is_refused(first_run, tiny_llama_dir, gsm8k_train_path):
    result = thinkfast(*_args(tiny_llama_dir, gsm8k_train_path, first_run, "--seed", "5"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "seed: 0 -> 5" in result.stderr and "--output-dir" in result.stderr


def test_resume_with_another_split_says_which_split_continues_it(first_run, tiny_llama_dir, gsm8k_train_path):
    args = _args(tiny_llama_dir, gsm8k_train_path, first_run)
    args[args.index("--split") + 1] = "test"
    result = thinkfast(*args)
    assert result.returncode == 2
    assert "split: 'train' -> 'test'); pass --split train to continue it;" in " ".join(result.stderr.split())


@pytest.mark.parametrize("recipe_split, flags, split", [
    (None, (), "train"),                                    # the word in gsm8k_train.jsonl
    (None, ("--split", "test"), "test"),
    ("test", (), "test"),                                   # a split the recipe sets wins
    (None, ("--set", "generate.data.split=dev"), "dev"),
])
def test_data_path_to_a_file_without_a_split_reads_the_split_its_name_says(recipe_split, flags, split, tmp_path,
                                                                           monkeypatch):
    seen = []
    monkeypatch.setattr("thinkfast.generate.runner.run_generate", lambda recipe, *a, **k: seen.append(recipe))
    data = tmp_path / "gsm8k_train.jsonl"
    data.write_text("")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[generate.data]\nsplit = "{recipe_split}"\n' if recipe_split else "")
    result = thinkfast("generate", str(recipe), "--data-path", str(data), *flags, "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert seen[0].generate.data.split == split


def test_data_path_split_changes_nothing_without_a_file(tmp_path, monkeypatch):
    """No --data-path, or a directory (searched for the split's files): the default split, test."""
    seen = []
    monkeypatch.setattr("thinkfast.generate.runner.run_generate", lambda recipe, *a, **k: seen.append(recipe))
    for flags in ((), ("--data-path", str(tmp_path))):
        assert thinkfast("generate", *flags, "-o", str(tmp_path / "out")).returncode == 0
    assert [r.generate.data.split for r in seen] == ["test", "test"]


def test_problem_ids_from_a_train_file_without_split_say_train(first_run, tiny_llama_dir, gsm8k_train_path,
                                                               tmp_path):
    """The ids match those of the same file read with --split train (as distill's data.responses joins them)."""
    assert gsm8k_train_path.name == "gsm8k_train.jsonl"
    args = _args(tiny_llama_dir, gsm8k_train_path, tmp_path / "out")
    del args[args.index("--split"):args.index("--split") + 2]
    assert thinkfast(*args).returncode == 0
    assert set(_samples(tmp_path / "out")) == set(_samples(first_run))
    assert json.loads((tmp_path / "out" / "run.json").read_text())["settings"]["split"] == "train"


@pytest.fixture(scope="module")
def special_token_llama_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama rewired to always (greedily) sample ``<|im_start|>``, a special token that is not its EOS.

    Attention and MLP outputs are zeroed, so the last hidden state is the last token's embedding; every
    (tied) embedding row is the same vector ``e`` except ``<|im_start|>``'s, ``2e``: its logit is always twice
    every other's (``<|im_end|>``, the EOS, included).
    """
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    special = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert special != tokenizer.eos_token_id and special in tokenizer.all_special_ids
    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.copy_(torch.full_like(emb, 0.1))
        emb[special] *= 2
    out = tmp_path_factory.mktemp("special_llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _greedy_gsm8k_run(model_dir: Path, data: Path, out: Path, *flags: str) -> dict:
    """``thinkfast generate`` greedily on the CPU over 2 GSM8K problems; returns the samples by key."""
    result = thinkfast("generate", "--model", str(model_dir), "--dataset", "gsm8k", "--data-path", str(data),
                       "--split", "train", "--limit", "2", "--temperature", "0", "--device", "cpu", "-o", str(out),
                       *flags)
    assert result.returncode == 0, result.stderr
    return _samples(out)


@pytest.mark.parametrize("flag", ["--stop-on-special-tokens", "--no-stop-on-special-tokens", None])
def test_a_special_token_that_is_not_the_eos_ends_a_sample(flag, special_token_llama_dir, gsm8k_train_path,
                                                             tmp_path):
    on = flag != "--no-stop-on-special-tokens"  # on by default
    out = tmp_path / "run"
    samples = _greedy_gsm8k_run(special_token_llama_dir, gsm8k_train_path, out, "--n", "1", "--max-new-tokens", "5",
                                "--template", "chat", *([flag] if flag else []))
    assert len(samples) == 2
    for rec in samples.values():
        # on: the first token, <|im_start|>, ends the sample; off: it repeats until max_new_tokens
        assert (rec["finish_reason"], rec["num_tokens"]) == (("eos", 1) if on else ("length", 5))
        assert rec["text"] == ""  # special tokens are not part of the text
    assert json.loads((out / "run.json").read_text())["settings"]["stop_on_special_tokens"] is on


ANSWER_LINE = "#### 1\n"


@pytest.fixture(scope="module")
def answer_llama_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama rewired to greedily write ``#### 1\n#### 1\n...`` after any prompt.

    Attention and MLP outputs are zeroed, so the last hidden state is the (normed) last token's embedding.
    The four tokens of ``"#### 1\n"`` get their own basis vectors as embeddings, every other token a shared
    one; the (untied) LM head maps each of them to the next token of the line, the newline and every other
    token to ``####``.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    line = tokenizer.encode(ANSWER_LINE, add_special_tokens=False)
    assert tokenizer.decode(line) == ANSWER_LINE and len(set(line)) == len(line)
    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    config.tie_word_embeddings = False
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb.zero_()
        head.zero_()
        emb[:, 0] = 1.0  # every other token
        head[line[0], 0] = 10.0  # ... is followed by "####"
        for k, tok in enumerate(line):
            emb[tok] = 0.0
            emb[tok, k + 1] = 1.0
            head[line[(k + 1) % len(line)], k + 1] = 10.0  # each token of the line by the next ("\n" by "####")
    out = tmp_path_factory.mktemp("answer_llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("flag", ["--stop-at-answer", "--no-stop-at-answer", None])
def test_a_sample_ends_once_its_gsm8k_answer_line_is_complete(flag, answer_llama_dir, gsm8k_train_path, tmp_path):
    on = flag != "--no-stop-at-answer"  # on by default
    out = tmp_path / "run"
    samples = _greedy_gsm8k_run(answer_llama_dir, gsm8k_train_path, out, "--n", "2", "--max-new-tokens", "10",
                                "--template", "plain", *([flag] if flag else []))
    assert len(samples) == 4
    for rec in samples.values():
        if on:  # the 4th token, the newline, completes the answer line; the text is cut before it
            assert (rec["finish_reason"], rec["num_tokens"], rec["text"]) == ("answer", 4, "#### 1")
        else:  # the run-on answer lines go on until max_new_tokens
            assert (rec["finish_reason"], rec["num_tokens"], rec["text"]) == ("length", 10, "#### 1\n#### 1\n#### ")
    assert json.loads((out / "run.json").read_text())["settings"]["stop_at_answer"] is on


def test_missing_model_is_a_clean_error(gsm8k_train_path, tmp_path):
    result = thinkfast(*_args(tmp_path / "nope", gsm8k_train_path, tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "nope" in result.stderr


@pytest.mark.slow
def test_no_problems_is_a_clean_error(tiny_llama_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = thinkfast(*_args(tiny_llama_dir, empty, tmp_path / "out"))
    assert result.returncode == 2
    assert "no problems in dataset 'gsm8k'" in result.stderr and "Traceback" not in result.stderr


def _two_ranks(args: list[str]) -> list[str]:
    """Run ``thinkfast ARGS`` as ranks 0 and 1 of a two-process job (as torchrun starts them), progress lines in
    the log as often as they come; returns each rank's stderr once both succeeded."""
    port = free_port()
    cmd = [sys.executable, "-m", "thinkfast", *args]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "RANK": str(r), "LOCAL_RANK": str(r),
                                   "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                   "THINKFAST_PROGRESS_SECONDS": "0.000001"})
             for r in range(2)]
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        errs.append(err)
    return errs


def test_two_ranks_shard_and_merge_into_the_single_process_result(first_run, tiny_llama_dir, gsm8k_train_path,
                                                                  tmp_path):
    out = tmp_path / "dist"
    rank0, _ = _two_ranks(_args(tiny_llama_dir, gsm8k_train_path, out))
    # the progress counts rank 0's share (4 of the 6 samples) and says so; before, "generate 25% 1/4 samples"
    # read as the job's count
    assert re.search(r"^generate \(rank 0 of 2\) \d+% [0-3]/4 samples ", rank0, re.MULTILINE), rank0
    merged = _samples(out)
    assert {k: r["text"] for k, r in merged.items()} == {k: r["text"] for k, r in _samples(first_run).items()}
    assert not list(out.glob("*.rank*"))
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and len(run["devices"]) == 2 and run["num_samples"] == 6
    # one invocation of two ranks side by side: its time is the slowest rank's, not the sum
    assert run["total_wall_seconds"] == run["wall_seconds"]
    assert 0 < max(r["total_wall_seconds"] for r in merged.values()) <= run["total_wall_seconds"]


def test_a_rerun_with_fewer_ranks_removes_the_timings_an_interrupted_run_left(first_run, tiny_llama_dir,
                                                                               gsm8k_train_path, tmp_path):
    """Under torchrun a rank that finishes first writes run.rank<r>.json and waits for the others; interrupted
    then, the file stays. A re-run with fewer processes (here one) merges, and must not leave it behind."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(first_run, out)
    (out / "run.rank1.json").write_text(json.dumps({"rank": 1, "wall_seconds": 1.0}))
    result = thinkfast(*_args(tiny_llama_dir, gsm8k_train_path, out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "samples.jsonl"]


def _generate_until_killed(cmd: list[str], samples: list[Path], at_least: int, env: dict[str, str] | None = None,
                           processes: int = 1) -> float:
    """Start ``processes`` copies of ``cmd`` (ranks 0.. under ``env`` when given), SIGKILL them all once the
    files ``samples`` hold ``at_least`` finished lines between them; returns how long they lived (seconds)."""
    import signal
    import time

    started = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "HF_HUB_OFFLINE": "1",
                                   **({"RANK": str(r), "LOCAL_RANK": str(r), **env} if env else {})})
             for r in range(processes)]
    try:
        while sum(p.read_bytes().count(b"\n") for p in samples if p.exists()) < at_least:
            assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs]
            assert time.perf_counter() - started < 120, "no samples after 120 s"
            time.sleep(0.05)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
    return time.perf_counter() - started


def test_total_wall_seconds_counts_a_killed_invocation_up_to_its_last_sample(tiny_llama_dir, gsm8k_train_path,
                                                                             tmp_path):
    """generate killed by SIGKILL (nothing runs at exit) and re-run on the same directory: run.json's
    total_wall_seconds counts the killed invocation's time up to its last finished sample, not only the
    re-run's."""
    out = tmp_path / "killed"
    args = _args(tiny_llama_dir, gsm8k_train_path, out, "--batch-size", "1", "--max-new-tokens", "8")
    lived = _generate_until_killed([sys.executable, "-m", "thinkfast", *args], [out / "samples.jsonl"], 2)
    killed = list(_samples(out).values())
    assert json.loads((out / "run.json").read_text())["status"] == "running" and len(killed) < 6
    killed_seconds = sum(r["seconds"] for r in killed)  # attributed shares: at most its time up to the last one
    assert thinkfast(*args).returncode == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["new_samples"] == 6 - len(killed)
    assert killed_seconds > 0
    assert killed_seconds + run["wall_seconds"] <= run["total_wall_seconds"] < lived + run["wall_seconds"]


def test_total_wall_seconds_counts_killed_ranks_by_the_slowest_rank(first_run, tiny_llama_dir, gsm8k_train_path,
                                                                   tmp_path):
    """Two ranks killed by SIGKILL leave their samples in their shard files only; the re-run (here one process)
    merges them into one run.json whose total counts the killed ranks' time once (ranks run side by side: the
    slowest rank's time up to its last sample), not per rank and not zero."""
    out = tmp_path / "dist"
    args = _args(tiny_llama_dir, gsm8k_train_path, out, "--batch-size", "1", "--max-new-tokens", "8")
    env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": free_port()}
    lived = _generate_until_killed([sys.executable, "-m", "thinkfast", *args],
                                   [out / "samples.rank0.jsonl", out / "samples.rank1.jsonl"], 2, env, processes=2)
    killed = _samples_by_file(out)
    assert not (out / "samples.jsonl").exists() and 0 < sum(map(len, killed.values())) < 6
    slowest_rank = max(sum(r["seconds"] for r in recs) for recs in killed.values())
    assert thinkfast(*args).returncode == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["num_samples"] == 6 and not list(out.glob("*.rank*"))
    assert slowest_rank + run["wall_seconds"] <= run["total_wall_seconds"] < lived + run["wall_seconds"]
    stamped = [r["total_wall_seconds"] for r in _samples(out).values()]
    assert max(stamped) <= run["total_wall_seconds"]


def _samples_by_file(out: Path) -> dict[str, list[dict]]:
    """Every finished line of each samples file in ``out`` (a torn last line left out)."""
    return {p.name: [json.loads(line) for line in p.read_text().split("\n")[:-1]] for p in out.glob("samples*.jsonl")}


def test_a_resume_where_rank_zero_has_nothing_left_says_why_it_shows_no_progress(first_run, tiny_llama_dir,
                                                                                 gsm8k_train_path, tmp_path):
    """Rank 0 alone shows progress; before, on a resume where its share was done (problems 0 and 2 here) it
    printed nothing while rank 1 generated. The merged result is still the one-process run's."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(first_run, out)
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(line for line in lines if '"gsm8k-train-1"' not in line))
    rank0, _ = _two_ranks(_args(tiny_llama_dir, gsm8k_train_path, out))
    assert rank0.startswith("rank 0's share of the samples is done; rank 1 generates the rest (only rank 0 shows "
                            "progress)\n"), rank0
    assert {k: r["text"] for k, r in _samples(out).items()} == {k: r["text"] for k, r in _samples(first_run).items()}
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["new_samples"] == 2 and not list(out.glob("*.rank*"))
