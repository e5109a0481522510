"""The distillation engine on a tiny random Llama teacher and real GSM8K records (CPU, seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from thinkfast.config.loader import load_recipe
from thinkfast.distill.checkpoint import CheckpointError
from thinkfast.distill.engine import run_distill
from thinkfast.distill.metrics import read_metrics

STUDENT_SSM = {"conv_kernel": 2, "chunk_size": 16}


def _stage(kind: str, **overrides) -> dict:
    # responses follow ~100 prompt tokens (chat template + question): logit stages need the longer rows
    stage = {"kind": kind, "steps": 6, "seq_len": 128 if kind in ("kd", "sft") else 64, "batch_size": 2,
             "lr": 3e-3, "warmup_steps": 0,
             "schedule": "constant", "loss_on": "all" if kind in ("matrix", "hidden") else "responses",
             "data": {"dataset": "gsm8k", "path": "", "split": "train", "limit": 3}}
    stage.update(overrides)
    return stage


def _recipe(tiny_llama_dir, gsm8k_train_path, stages: list[dict], student: str = "llamba",
            student_options: dict | None = None):
    for stage in stages:
        stage["data"]["path"] = str(gsm8k_train_path)
    data = {
        "run": {"name": "test", "seed": 0, "device": "cpu"},
        "teacher": {"model": str(tiny_llama_dir)},
        "student": {"kind": student, "options": STUDENT_SSM if student_options is None else student_options},
        "distill": {"stages": stages, "progress": False},
    }
    return load_recipe(None, extra=data)


def _losses(out) -> list[float]:
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl")]


@pytest.mark.parametrize("kind, student, extra", [
    ("matrix", "llamba", {"seq_len": 32, "lr": 1e-2, "train": ["mixers"]}),
    ("hidden", "llamba", {}),
    ("kd", "mambainllama", {}),
    ("sft", "transformer", {"lr": 1e-2}),
])
def test_each_stage_loss_decreases(kind, student, extra, tiny_llama_dir, gsm8k_train_path, tmp_path):
    options = {} if student == "transformer" else dict(STUDENT_SSM)
    if student == "mambainllama":
        options["attention_layers"] = [0]
    stage = _stage(kind, steps=6, **extra)
    recipe = _recipe(tiny_llama_dir, gsm8k_train_path, [stage], student, options)
    run_distill(recipe, tmp_path)
    losses = _losses(tmp_path)
    assert len(losses) == 6
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses


def test_hidden_stage_leaves_untrained_parameters_untouched(tiny_llama_dir, gsm8k_train_path, tmp_path):
    from thinkfast.models import build_student, load_model, load_teacher

    stage = _stage("hidden", steps=2, train=["mixers"], layers=[1], seq_len=32)
    recipe = _recipe(tiny_llama_dir, gsm8k_train_path, [stage])
    torch.manual_seed(recipe.run.seed)  # the engine seeds the same way before building the student
    teacher, _ = load_teacher(recipe.teacher)
    initial = build_student(teacher, "llamba", STUDENT_SSM).state_dict()
    final, _ = load_model(run_distill(recipe, tmp_path))
    changed = {k for k, v in final.state_dict().items() if not torch.equal(v, initial[k])}
    assert changed, "nothing trained"
    assert all(k.startswith("layers.1.mixer.") for k in changed), sorted(changed)


def test_resume_after_interruption_is_bit_exact(tiny_llama_dir, gsm8k_train_path, tmp_path):
    from thinkfast.models import load_model

    def stages():
        return [_stage("hidden", steps=1, train=["mixers"], seq_len=32, batch_size=1),
                _stage("kd", steps=4, checkpoint_every=2, grad_accum=2, schedule="cosine", warmup_steps=1,
                       seq_len=128, batch_size=1)]

    full = run_distill(_recipe(tiny_llama_dir, gsm8k_train_path, stages()), tmp_path / "full")

    def interrupt(position):
        if position.stage_index == 1 and position.step == 3:
            raise KeyboardInterrupt

    part_dir = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run_distill(_recipe(tiny_llama_dir, gsm8k_train_path, stages()), part_dir, on_step=interrupt)
    assert (part_dir / "checkpoints" / "latest").read_text().strip() == "stage01-step0000002"
    assert not (part_dir / "student").exists()
    changed = stages()
    changed[1]["steps"] = 5  # a different schedule is a different run: refused, nothing overwritten
    with pytest.raises(CheckpointError, match=r"differs .* at distill\.stages\[1\]\.steps;"):  # the key itself
        run_distill(_recipe(tiny_llama_dir, gsm8k_train_path, changed), part_dir, resume=True)
    with (part_dir / "metrics.jsonl").open("a") as fh:
        fh.write('{"stage": "kd", "global_step": 4, "lo')  # a kill inside a write leaves a line cut short
    resumed = run_distill(_recipe(tiny_llama_dir, gsm8k_train_path, stages()), part_dir, resume=True)

    a, _ = load_model(full)
    b, _ = load_model(resumed)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    records = read_metrics(part_dir / "metrics.jsonl")
    assert [r["global_step"] for r in records] == list(range(1, 6))
    assert [r["loss"] for r in records] == _losses(tmp_path / "full")


@pytest.fixture
def slow_saves(monkeypatch):
    """The trainer's clock, on which every training step takes 1 s (its teacher pass) and a checkpoint save 100 s."""
    import types

    from thinkfast.distill import checkpoint, trainer

    clock = [0.0]

    def advancing(seconds, function):
        def call(*args, **kwargs):
            clock[0] += seconds
            return function(*args, **kwargs)
        return call

    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(trainer, "teacher_targets", advancing(1.0, trainer.teacher_targets))
    monkeypatch.setattr(checkpoint, "save_checkpoint", advancing(100.0, checkpoint.save_checkpoint))


def test_tokens_per_s_leaves_out_the_time_spent_saving_checkpoints(tiny_llama_dir, gsm8k_train_path, tmp_path,
                                                                   slow_saves):
    """On the slow_saves clock each logged step trained the same tokens in the same time, so each has the same
    tokens/s, the step after the save included, while the run's elapsed time still counts the save."""
    stage = _stage("kd", steps=4, checkpoint_every=2, seq_len=128, batch_size=1)  # a save after step 2
    run_distill(_recipe(tiny_llama_dir, gsm8k_train_path, [stage]), tmp_path)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["tokens_per_s"] for r in records] == [128.0] * 4, records
    assert records[2]["elapsed_s"] - records[1]["elapsed_s"] == 101.0


def test_elapsed_s_goes_on_across_an_interruption_from_the_time_its_checkpoint_recorded(
        tiny_llama_dir, gsm8k_train_path, tmp_path, slow_saves):
    """On a clock where a step takes 1 s and a checkpoint save 100 s, a run stopped after step 3 (its last
    checkpoint: step 2) and resumed logs elapsed_s as one run would: the resumed steps go on from the 102 s
    its checkpoint recorded (the save included) instead of from 0; the stopped run's step after that
    checkpoint, redone, counts once. tokens/s after the resume is that of every other step."""
    def interrupt(position):
        if position.step == 3:
            raise KeyboardInterrupt  # leaves what a kill leaves: the checkpoint of step 2 and 3 metrics lines

    def recipe():
        return _recipe(tiny_llama_dir, gsm8k_train_path, [_stage("kd", steps=4, checkpoint_every=2, seq_len=128,
                                                                 batch_size=1)])

    with pytest.raises(KeyboardInterrupt):
        run_distill(recipe(), tmp_path, on_step=interrupt)
    run_distill(recipe(), tmp_path, resume=True)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["elapsed_s"] for r in records] == [1.0, 2.0, 103.0, 104.0], records
    assert [r["tokens_per_s"] for r in records] == [128.0] * 4, records


def test_a_full_disk_while_checkpointing_is_one_error_keeping_the_last_checkpoint(tiny_llama_dir, gsm8k_train_path,
                                                                                    tmp_path, monkeypatch):
    """torch.save on a full device raises a RuntimeError about the file position (seen on this machine):
    it is a CheckpointError naming the file and --resume, the partial checkpoint is removed, and the last
    complete one stays the one to resume from."""
    import collections

    from thinkfast.distill import checkpoint

    calls = []
    save = torch.save

    def full_after_the_first_checkpoint(obj, fh, *args, **kwargs):
        calls.append(fh.name)
        if len(calls) > 2:  # state.pt and rng.pt of the step-2 checkpoint fit; the next write does not
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 795318528 vs 795318420")
        return save(obj, fh, *args, **kwargs)

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.torch, "save", full_after_the_first_checkpoint)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 24 * 2**10, 24 * 2**10))
    stage = _stage("kd", steps=4, checkpoint_every=2, seq_len=128, batch_size=1)
    with pytest.raises(CheckpointError, match=r"state\.pt: no space left on the device while writing it \(0\.0 MiB "
                                              r"free\); free some space, then run again with --resume"):
        run_distill(_recipe(tiny_llama_dir, gsm8k_train_path, [stage]), tmp_path)
    root = tmp_path / "checkpoints"
    assert (root / "latest").read_text().strip() == "stage00-step0000002"
    assert not list(root.glob(".tmp-*"))


def test_ctrl_c_while_a_checkpoint_is_written_is_an_interruption_keeping_the_last_checkpoint(
        tiny_llama_dir, gsm8k_train_path, tmp_path, monkeypatch):
    """Before: a SIGINT arriving inside torch.save came out as torch's RuntimeError 'unexpected pos' (its archive
    writer closing as the interrupt unwound), so the CLI reported a crash with a traceback instead of
    'interrupted'. A real SIGINT is sent to this process while the step-2 checkpoint's state.pt is written."""
    import os
    import signal

    from thinkfast.distill import checkpoint

    class SigintOnThirdWrite:
        def __init__(self, fh):
            self.fh, self.writes = fh, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return self.fh.write(data)

        def flush(self):
            self.fh.flush()

    saves = []
    save = torch.save

    def interrupted_second_checkpoint(obj, fh, *args, **kwargs):
        saves.append(fh.name)
        target = SigintOnThirdWrite(fh) if len(saves) == 3 else fh  # state.pt, rng.pt, then the 2nd state.pt
        return save(obj, target, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", interrupted_second_checkpoint)
    stage = _stage("kd", steps=3, checkpoint_every=1, seq_len=128, batch_size=1)
    with pytest.raises(KeyboardInterrupt):
        run_distill(_recipe(tiny_llama_dir, gsm8k_train_path, [stage]), tmp_path)
    root = tmp_path / "checkpoints"
    assert saves[-1].endswith("state.pt") and "step0000002" in saves[-1]
    assert (root / "latest").read_text().strip() == "stage00-step0000001"
    assert not list(root.glob(".tmp-*"))


def test_resume_needs_only_the_data_of_the_stages_left(tiny_llama_dir, gsm8k_train_path, tmp_path):
    first = tmp_path / "stage0.jsonl"
    first.write_text("".join(gsm8k_train_path.read_text().splitlines(keepends=True)[:20]))

    def recipe():
        loaded = _recipe(tiny_llama_dir, gsm8k_train_path,
                         [_stage("hidden", steps=1, train=["mixers"], seq_len=32, batch_size=1),
                          _stage("kd", steps=2, checkpoint_every=1, seq_len=128, batch_size=1)])
        loaded.distill.stages[0].data.path = str(first)
        return loaded

    def interrupt(position):
        if position.stage_index == 1 and position.step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_distill(recipe(), tmp_path / "run", on_step=interrupt)
    first.unlink()  # the finished stage's data is gone: resuming does not need it
    assert (run_distill(recipe(), tmp_path / "run", resume=True) / "model.safetensors").is_file()


def test_packed_documents_do_not_influence_each_other(tiny_llama_dir, smollm_tokenizer):
    from thinkfast.data.packing import pack
    from thinkfast.models import build_student, load_teacher

    teacher, _ = load_teacher(str(tiny_llama_dir))
    student = build_student(teacher, "mambainllama", {**STUDENT_SSM, "attention_layers": [2]}).eval()
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (13, 21, 9)]
    batch = pack([(d, [True] * len(d)) for d in docs], seq_len=48, pad_id=0, shuffle=False)
    assert batch.input_ids.shape[0] == 1 and int(batch.doc_ids.max()) == 3  # three documents, then padding
    with torch.no_grad():
        packed = student(batch.input_ids, doc_ids=batch.doc_ids).logits[0]
        start = 0
        for doc in docs:
            alone = student(torch.tensor([doc])).logits[0]
            torch.testing.assert_close(packed[start:start + len(doc)], alone, rtol=1e-4, atol=1e-4)
            start += len(doc)
        # changing the first document changes nothing downstream of it
        other = batch.input_ids.clone()
        other[0, :13] = torch.randint(5, 1000, (13,), generator=g)
        changed = student(other, doc_ids=batch.doc_ids).logits[0]
    assert torch.equal(changed[13:], packed[13:])
    assert not torch.equal(changed[:13], packed[:13])


def test_cli_distill_writes_a_loadable_student(tiny_llama_dir, gsm8k_train_path, smollm_tokenizer, tmp_path):
    from thinkfast.cli import cli
    from thinkfast.models import load_model

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(f"""
[run]
name = "tiny"
device = "cpu"

[teacher]
model = "{tiny_llama_dir}"

[student]
kind = "llamba"
options = {{ conv_kernel = 2, chunk_size = 16 }}

[[distill.stages]]
kind = "kd"
steps = 2
seq_len = 128
batch_size = 1
data = {{ dataset = "gsm8k", path = "{gsm8k_train_path}", limit = 2 }}
""")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["distill", str(recipe), "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    model, _ = load_model(out / "student", with_tokenizer=False)
    assert (out / "student" / "tokenizer.json").is_file()
    assert model.config.student == "llamba" and set(model.config.mixers) == {"ssm"}
    ids = torch.tensor([smollm_tokenizer("1 + 1 =")["input_ids"]])
    assert torch.isfinite(model(ids).logits).all()
    assert len(read_metrics(out / "metrics.jsonl")) == 2

    again = CliRunner().invoke(cli, ["distill", str(recipe), "-o", str(out), "--no-progress"])
    assert again.exit_code == 2 and "--resume" in again.output
    bad = CliRunner().invoke(cli, ["distill", str(recipe), "-o", str(out), "--set",
                                   "distill.stages=[{kind='kd', steps=1, train=['attention']}]"])
    assert bad.exit_code == 2 and "train" in bad.output


# --- bad input stops distill before any work, and leaves no files behind --------------------------

def _refuse_models(*args, **kwargs):
    raise AssertionError("the models were loaded although the data is bad")


def _two_stage_recipe(tmp_path, teacher, data_path: str) -> Path:
    recipe = tmp_path / "bad_data.toml"
    recipe.write_text(f"""
[run]
device = "cpu"
[teacher]
model = "{teacher}"
[student]
kind = "llamba"
options = {{ conv_kernel = 2, chunk_size = 16 }}
[[distill.stages]]
kind = "hidden"
steps = 1
data = {{ dataset = "synthetic-arith", limit = 2 }}
[[distill.stages]]
kind = "kd"
steps = 1
data = {{ dataset = "gsm8k", path = "{data_path}", limit = 2 }}
""")
    return recipe


@pytest.fixture
def previous_run(tmp_path):
    """An output directory holding an earlier run's files (no checkpoint), which a failed start must keep."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"global_step": 1, "loss": 2.5}\n')
    (out / "recipe.toml").write_text("# the earlier run\n")
    return out


def _unchanged(out) -> bool:
    return sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "recipe.toml"] \
        and (out / "metrics.jsonl").read_text() == '{"global_step": 1, "loss": 2.5}\n' \
        and (out / "recipe.toml").read_text() == "# the earlier run\n"


def test_a_missing_data_file_fails_validation_and_distill_before_the_teacher(tiny_llama_dir, tmp_path,
                                                                              previous_run, monkeypatch):
    from thinkfast.cli import cli

    missing = tmp_path / "no_such.jsonl"
    recipe = _two_stage_recipe(tmp_path, tiny_llama_dir, str(missing))
    message = f"{recipe}: distill.stages[1].data.path: {missing} does not exist"
    validated = CliRunner().invoke(cli, ["recipe", "validate", str(recipe)])
    assert validated.exit_code == 2 and message in validated.stderr and "Traceback" not in validated.output

    monkeypatch.setattr("thinkfast.distill.engine.load_models", _refuse_models)
    for out in (previous_run, tmp_path / "fresh"):
        result = CliRunner().invoke(cli, ["distill", str(recipe), "-o", str(out)], catch_exceptions=False)
        assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    assert _unchanged(previous_run)
    assert not (tmp_path / "fresh").exists()

    missing.write_text('{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\\n#### 2"}\n')
    assert CliRunner().invoke(cli, ["recipe", "validate", str(recipe)]).exit_code == 0


def test_a_malformed_data_line_stops_distill_before_the_teacher(tiny_llama_dir, tmp_path, previous_run,
                                                                 monkeypatch):
    from thinkfast.cli import cli

    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\\n#### 2"}\n{"question": oops\n')
    monkeypatch.setattr("thinkfast.distill.engine.load_models", _refuse_models)
    result = CliRunner().invoke(cli, ["distill", str(_two_stage_recipe(tmp_path, tiny_llama_dir, str(data))),
                                      "-o", str(previous_run)], catch_exceptions=False)
    assert result.exit_code == 2 and f"{data}:2: not valid JSON" in result.stderr
    assert _unchanged(previous_run)


def test_a_run_that_fails_to_start_writes_nothing(tiny_llama_dir, tmp_path, previous_run, monkeypatch):
    """A failure after the models load but before training (here: tokenising the first stage's data)
    neither writes recipe.toml and an empty metrics.jsonl nor touches an earlier run's."""
    from thinkfast.cli import cli
    from thinkfast.errors import DataError

    def fail(*args, **kwargs):
        raise DataError("data.template: the tokenizer cannot render these prompts")

    monkeypatch.setattr("thinkfast.distill.engine.training_examples", fail)
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\\n#### 2"}\n')
    recipe = _two_stage_recipe(tmp_path, tiny_llama_dir, str(data))
    for out in (previous_run, tmp_path / "fresh"):
        result = CliRunner().invoke(cli, ["distill", str(recipe), "-o", str(out)], catch_exceptions=False)
        assert result.exit_code == 2 and "cannot render" in result.stderr
    assert _unchanged(previous_run)
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize("content", ["", "\n  \n"], ids=["empty", "blank-lines"])
def test_a_data_file_without_records_names_the_stage_key_and_file(tiny_llama_dir, tmp_path, previous_run,
                                                                   monkeypatch, content):
    from thinkfast.cli import cli

    data = tmp_path / "train.jsonl"
    data.write_text(content)
    monkeypatch.setattr("thinkfast.distill.engine.load_models", _refuse_models)
    result = CliRunner().invoke(cli, ["distill", str(_two_stage_recipe(tmp_path, tiny_llama_dir, str(data))),
                                      "-o", str(previous_run)], catch_exceptions=False)
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: distill.stages[1].data: no problems in dataset 'gsm8k'")
    assert f"{data} has no records" in line
    assert _unchanged(previous_run)


def test_resume_names_the_changed_key_inside_a_stage_and_a_changed_stage_count():
    from thinkfast.distill.engine import _differences

    old = {"run": {"seed": 0}, "distill": {"stages": [{"lr": 1e-3, "train": ["mixers"]}, {"lr": 3e-4}]}}
    new = {"run": {"seed": 0}, "distill": {"stages": [{"lr": 1e-3, "train": ["all"]}, {"lr": 1e-3}]}}
    assert _differences(old, new) == ["distill.stages[0].train", "distill.stages[1].lr"]
    assert _differences(old, {**new, "distill": {"stages": [{"lr": 1e-3}]}}) == ["distill.stages"]
    assert _differences(old, old) == []


def _one_stage_recipe(tmp_path, teacher_table: str, seq_len: int = 128) -> Path:
    recipe = tmp_path / "one_stage.toml"
    recipe.write_text(f"""
[run]
device = "cpu"
[teacher]
{teacher_table}
[student]
kind = "llamba"
options = {{ conv_kernel = 2, chunk_size = 16 }}
[[distill.stages]]
kind = "kd"
steps = 1
seq_len = {seq_len}
batch_size = 1
data = {{ dataset = "synthetic-arith", limit = 2 }}
""")
    return recipe


def test_a_first_batch_without_loss_tokens_stops_distill_before_it_writes_anything(tiny_llama_dir, tmp_path,
                                                                                    previous_run):
    """The check that the first batch holds loss tokens runs after the models load: a run stopped by it
    emptied an earlier run's metrics.jsonl and replaced its recipe.toml (and left both in a fresh directory)."""
    from thinkfast.cli import cli

    recipe = _one_stage_recipe(tmp_path, f'model = "{tiny_llama_dir}"', seq_len=8)  # the prompt fills the rows
    for out in (previous_run, tmp_path / "fresh"):
        result = CliRunner().invoke(cli, ["distill", str(recipe), "-o", str(out), "--no-progress"],
                                    catch_exceptions=False)
        assert result.exit_code == 2, result.output
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("error")]  # after load bars
        assert line.startswith("error: distill.stages[0]: the first batch holds no loss tokens")
    assert _unchanged(previous_run)
    assert not (tmp_path / "fresh").exists()


def test_a_teacher_directory_without_tokenizer_files_is_named_and_teacher_tokenizer_supplies_them(
        tiny_llama_dir, tmp_path, previous_run):
    """A thinkfast teacher directory (an sft run's student) saved without its tokenizer: one error naming it
    (it was 'the tokenizer has no EOS token'), nothing written; [teacher].tokenizer supplies the tokenizer."""
    from thinkfast.cli import cli
    from thinkfast.models import build_student, load_teacher, save_model

    teacher, _ = load_teacher(str(tiny_llama_dir))
    bare = save_model(build_student(teacher, "transformer"), None, tmp_path / "sft-student")
    assert not list(bare.glob("tokenizer*"))
    recipe = _one_stage_recipe(tmp_path, f'model = "{bare}"')
    result = CliRunner().invoke(cli, ["distill", str(recipe), "-o", str(previous_run), "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: {bare}: no tokenizer files found next to the model; save the model "
                                     f"with its tokenizer or set [teacher].tokenizer")
    assert _unchanged(previous_run)
    recipe = _one_stage_recipe(tmp_path, f'model = "{bare}"\ntokenizer = "{tiny_llama_dir}"')
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["distill", str(recipe), "-o", str(out), "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (out / "student" / "tokenizer.json").is_file() and len(read_metrics(out / "metrics.jsonl")) == 1


def test_resume_with_another_number_of_processes_names_the_one_that_wrote_the_checkpoint(
        tiny_llama_dir, gsm8k_train_path, tmp_path):
    """A checkpoint written by 2 processes (torchrun) resumed by one: refused before the models load, naming
    the process count to use (the data stream alone said 'resume with the recipe the checkpoint was written
    with', though the recipe was the same)."""
    import json

    from thinkfast.distill import checkpoint

    def recipe():
        return _recipe(tiny_llama_dir, gsm8k_train_path, [_stage("kd", steps=2, checkpoint_every=1, seq_len=128,
                                                                 batch_size=1)])

    def interrupt(position):
        if position.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_distill(recipe(), tmp_path, on_step=interrupt)
    saved = checkpoint.latest_checkpoint(tmp_path / "checkpoints")
    rngs = torch.load(saved / "rng.pt", weights_only=True)
    torch.save(rngs * 2, saved / "rng.pt")  # as two processes write it
    position = json.loads((saved / "position.json").read_text())
    position["data_state"]["world_size"] = 2
    (saved / "position.json").write_text(json.dumps(position))
    with pytest.raises(CheckpointError, match=r"written by 2 processes and this run has 1; resume under torchrun "
                                              r"--nproc-per-node 2"):
        run_distill(recipe(), tmp_path, resume=True)


def test_distill_warns_once_about_a_cut_line_in_its_responses_file(tiny_llama_dir, gsm8k_train_path, tmp_path):
    """A stage trained on a generate output whose last line a killed generate cut short: distill trains on the
    whole lines and says, once, on its console, which line it left out."""
    import json

    from rich.console import Console

    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"problem_id": f"gsm8k-train-{i}", "text": "So 2 + 2 = 4.\n#### 4"}) + "\n"
                               for i in range(3)) + '{"problem_id": "gsm8k-train-2", "text": "#### ')  # ids by line
    stages = [_stage("sft", steps=1, data={"dataset": "gsm8k", "path": "", "split": "train", "limit": 3,
                                           "responses": str(samples)}) for _ in range(2)]
    console = Console(record=True, width=400)
    run_distill(_recipe(tiny_llama_dir, gsm8k_train_path, stages, "transformer", {}), tmp_path / "out",
                console=console)
    assert console.export_text().splitlines() == [
        f"warning: data.responses: {samples}:4: the last line is cut short (generate was stopped while writing "
        f"it); that sample is left out"]


def test_two_ddp_ranks_make_the_updates_one_process_makes_with_their_combined_batch(tiny_llama_dir,
                                                                                    gsm8k_train_path, tmp_path):
    """``torchrun --nproc-per-node 2`` on the CPU (gloo), DDP, batch 1 per rank: the ranks take the rows one
    process with batch 2 takes, the loss is normalised over both ranks' response tokens (unequal per row) and DDP
    averages the gradients, so the saved student agrees with the single process's to float32 rounding. Rank 0
    alone writes the student and the metrics, whose token counts cover both ranks."""
    from cli_run import thinkfast, torchrun
    from safetensors.torch import load_file

    def recipe(name: str, batch_size: int) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(f"""
[run]
device = "cpu"
seed = 0
[teacher]
model = "{tiny_llama_dir}"
[student]
kind = "llamba"
options = {{ conv_kernel = 2, chunk_size = 16 }}
[distill]
strategy = "ddp"
progress = false
[[distill.stages]]
kind = "kd"
steps = 3
seq_len = 128
batch_size = {batch_size}
lr = 3e-3
warmup_steps = 0
data = {{ dataset = "gsm8k", path = "{gsm8k_train_path}", split = "train", limit = 6 }}
""")
        return path

    job = torchrun("distill", str(recipe("two", 1)), "-o", "two", cwd=tmp_path, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    single = thinkfast("distill", str(recipe("one", 2)), "-o", str(tmp_path / "one"))
    assert single.exit_code == 0, single.output
    two, one = read_metrics(tmp_path / "two" / "metrics.jsonl"), read_metrics(tmp_path / "one" / "metrics.jsonl")
    assert [r["tokens"] for r in two] == [r["tokens"] for r in one] == [256, 512, 768]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-4)
    assert len({r["loss"] for r in one}) == 3  # it trained: three different losses
    trained = load_file(tmp_path / "two" / "student" / "model.safetensors")
    reference = load_file(tmp_path / "one" / "student" / "model.safetensors")
    assert trained.keys() == reference.keys()
    for name, tensor in reference.items():
        # Adam divides by the gradients' running RMS, so rounding in the two reduction orders shows up to ~2e-6
        # relative; one process trained on other rows (batch 1) ends 1.5e-4 or more away on every tensor
        assert float((trained[name] - tensor).norm() / tensor.norm().clamp(min=1e-12)) < 2e-5, name
    assert not list((tmp_path / "two").glob("*rank*"))
