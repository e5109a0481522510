"""User errors the subcommands share: output directories that cannot be made, model paths and files that
cannot be loaded. Each must be one message naming the path and the fix, exit code 2, no traceback, and
nothing written before the error (nor lost)."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest
from cli_run import thinkfast

from thinkfast.cli.options import make_output_dir, output_directory
from thinkfast.errors import OutputDirError


def assert_one_error(result, *fragments: str) -> str:
    """Exit 2, one ``error:`` line, no traceback, each fragment in it; returns the line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def blocked(tmp_path) -> Path:
    """An output path under a regular file: it can never be created."""
    (tmp_path / "afile").write_text("not a directory\n")
    return tmp_path / "afile" / "out"


# --- output directories ------------------------------------------------------------------------------

def _refuse(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} ran although the output directory cannot be created")
    return fail


def test_generate_checks_the_output_directory_before_loading_anything(blocked, monkeypatch):
    monkeypatch.setattr("thinkfast.generate.runner.run_generate", _refuse("generate"))
    result = thinkfast("generate", "--model", "no/such-model", "--dataset", "synthetic-arith", "--limit", "2",
                       "--device", "cpu", "-o", str(blocked))
    assert_one_error(result, f"cannot create output directory {blocked}: {blocked.parent} is a file, not a "
                             f"directory", "--output-dir")


def test_distill_checks_the_output_directory_before_loading_the_teacher(blocked, tmp_path, monkeypatch):
    monkeypatch.setattr("thinkfast.distill.engine.run_distill", _refuse("distill"))
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent(f"""
        [run]
        output_dir = "{blocked}"
        [teacher]
        model = "no/such-model"
        [[distill.stages]]
        kind = "kd"
        steps = 1
    """))
    assert_one_error(thinkfast("distill", str(recipe)), f"cannot create output directory {blocked}",
                     "run.output_dir")


def test_evaluate_checks_the_output_directory_first(blocked, monkeypatch):
    monkeypatch.setattr("thinkfast.evaluate.engine.evaluate", _refuse("evaluate"))
    fixtures = Path(__file__).parent / "fixtures" / "evaluate" / "student"
    assert_one_error(thinkfast("evaluate", "--runs", str(fixtures), "-o", str(blocked)),
                     f"cannot create output directory {blocked}")


def test_profile_checks_the_output_directory_before_measuring(blocked, monkeypatch):
    monkeypatch.setattr("thinkfast.profile.runner.run_profile", _refuse("the sweep"))
    result = thinkfast("profile", "--models", "tiny-llama,tiny-llamba", "--batch", "1,4", "--seqlen", "64,128",
                       "--device", "cpu", "-o", str(blocked))
    assert_one_error(result, f"cannot create output directory {blocked}")


def test_an_existing_file_as_output_directory_is_named(tmp_path):
    target = tmp_path / "results"
    target.write_text("keep me\n")
    with pytest.raises(OutputDirError, match=f"cannot create output directory {target}: a file of that name"):
        make_output_dir(target)
    assert target.read_text() == "keep me\n"


def test_output_directory_is_removed_after_a_failure_only_if_this_call_made_it_and_it_is_empty(tmp_path):
    fresh = tmp_path / "a" / "b" / "run"
    with pytest.raises(RuntimeError), output_directory(fresh):
        assert fresh.is_dir()
        raise RuntimeError("bad input")
    assert not (tmp_path / "a").exists()  # the parents it made went too

    with pytest.raises(RuntimeError), output_directory(fresh) as out:
        (out / "samples.jsonl").write_text("{}\n")
        raise RuntimeError("crashed after writing")
    assert (fresh / "samples.jsonl").read_text() == "{}\n"  # anything written is kept

    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError), output_directory(existing):
        raise RuntimeError("bad input")
    assert existing.is_dir()  # not made by this call: left alone, even empty
    assert list(existing.iterdir()) == []  # and the write check left nothing in it


def test_distill_resume_without_a_checkpoint_is_one_line_and_changes_nothing(tmp_path, monkeypatch):
    """``--resume`` into a directory that holds no checkpoint (a typo in -o, a run that never saved one) is one
    error line before the models load; the directory is left as it was (a fresh one is not left behind)."""
    monkeypatch.setattr("thinkfast.distill.engine.load_models", _refuse("loading the models"))
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        [teacher]
        model = "no/such-model"
        [[distill.stages]]
        kind = "kd"
        steps = 1
        data = { dataset = "synthetic-arith", limit = 2 }
    """))
    fresh = tmp_path / "fresh"
    assert_one_error(thinkfast("distill", str(recipe), "-o", str(fresh), "--resume"),
                     f"--resume: no checkpoint in {fresh / 'checkpoints'}; run without --resume to start")
    assert not fresh.exists()
    earlier = tmp_path / "earlier"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "metrics.jsonl").write_text('{"global_step": 1, "loss": 2.5}\n')
    assert_one_error(thinkfast("distill", str(recipe), "-o", str(earlier), "--resume"),
                     f"--resume: no checkpoint in {earlier / 'checkpoints'}")
    assert sorted(p.name for p in earlier.rglob("*")) == ["checkpoints", "metrics.jsonl"]
    assert (earlier / "metrics.jsonl").read_text() == '{"global_step": 1, "loss": 2.5}\n'


# --- model files -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """A tiny llamba student saved with its tokenizer, as `thinkfast distill` writes one."""
    from thinkfast.models import build_student, load_teacher, save_model

    teacher, tokenizer = load_teacher(str(tiny_llama_dir))
    return save_model(build_student(teacher, "llamba", {"chunk_size": 16}), tokenizer,
                      tmp_path_factory.mktemp("student") / "student")


def _truncated_copy(model_dir: Path, out: Path) -> Path:
    """``model_dir`` with every file copied but ``model.safetensors`` cut to its first 100 kB."""
    out.mkdir()
    for file in model_dir.iterdir():
        if file.name != "model.safetensors":
            shutil.copy(file, out / file.name)
    (out / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes()[:100_000])
    return out


def _generate(model: str | Path, out: Path, *extra: str):
    return thinkfast("generate", "--model", str(model), "--dataset", "synthetic-arith", "--limit", "2", "--n", "1",
                     "--max-new-tokens", "4", "--device", "cpu", "-o", str(out), *extra)


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_a_truncated_weights_file_is_named_by_generate(which, student_dir, tiny_llama_dir, tmp_path):
    broken = _truncated_copy(student_dir if which == "student" else tiny_llama_dir, tmp_path / "broken")
    assert_one_error(_generate(broken, tmp_path / "out"),
                     f"{broken / 'model.safetensors'} is truncated or corrupt", "download it again")
    assert not (tmp_path / "out").exists()  # nothing left behind


def test_profile_checks_model_files_before_measuring_the_others(student_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("thinkfast.profile.runner.profile_cell", _refuse("a measurement"))
    broken = _truncated_copy(student_dir, tmp_path / "broken")
    result = thinkfast("profile", "--models", f"tiny-llama,{broken}", "--batch", "1", "--seqlen", "64",
                       "--device", "cpu", "-o", str(tmp_path / "out"))
    assert_one_error(result, f"{broken / 'model.safetensors'} is truncated or corrupt")


def test_distill_names_a_truncated_teacher(student_dir, tmp_path):
    broken = _truncated_copy(student_dir, tmp_path / "broken")
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent(f"""
        [teacher]
        model = "{broken}"
        [[distill.stages]]
        kind = "kd"
        steps = 1
        data = {{ dataset = "synthetic-arith", limit = 4 }}
    """))
    assert_one_error(thinkfast("distill", str(recipe), "-o", str(tmp_path / "run")),
                     f"{broken / 'model.safetensors'} is truncated or corrupt")
    assert not (tmp_path / "run").exists()


def test_a_model_directory_without_tokenizer_files_is_named_and_teacher_tokenizer_supplies_them(student_dir,
                                                                                                  tmp_path):
    """A thinkfast directory saved without its tokenizer: --model names it (not [teacher].tokenizer, which
    --model does not read); as [teacher].model the error also offers [teacher].tokenizer, and setting it works
    (it was ignored for thinkfast directories, so following the advice gave the same error)."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(student_dir / name, bare / name)
    out = tmp_path / "out"
    line = assert_one_error(_generate(bare, out),
                            f"{bare}: no tokenizer files found next to the model; save the model with its tokenizer")
    assert "[teacher].tokenizer" not in line and not out.exists()

    recipe = tmp_path / "r.toml"
    args = ("--dataset", "synthetic-arith", "--limit", "2", "--n", "1", "--max-new-tokens", "4", "--device", "cpu",
            "-o", str(out))
    recipe.write_text(f'[teacher]\nmodel = "{bare}"\n')
    assert_one_error(thinkfast("generate", str(recipe), *args),
                     f"{bare}: no tokenizer files found next to the model; save the model with its tokenizer or "
                     f"set [teacher].tokenizer")
    recipe.write_text(f'[teacher]\nmodel = "{bare}"\ntokenizer = "{student_dir}"\n')
    result = thinkfast("generate", str(recipe), *args)
    assert result.exit_code == 0, result.output
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2


# --- model paths -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, spec, message", [
    ("missing path", "./no/such/dir", "model './no/such/dir': no such file or directory, and not a hub id; give an "
                                      "existing model directory or .gguf file, or a hub id (those look like org/name)"),
    ("random file", "weights.bin", "model 'weights.bin' is a file, not a model directory or a .gguf file"),
    ("empty dir", "empty", "model 'empty' is a directory without config.json, so not a model directory"),
    ("distill output", "distilled", "model 'distilled' is a directory without config.json, so not a model "
                                    "directory; it holds distill's outputs: give its student, distilled/student"),
    ("broken gguf", "broken.gguf", "cannot load model 'broken.gguf': "),
    ("missing gguf", "no/such.gguf", "model 'no/such.gguf': .gguf file does not exist; check the path"),
])
def test_generate_names_a_bad_model_path_and_leaves_no_output_directory(kind, spec, message, tmp_path,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "broken.gguf").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "distilled" / "student").mkdir(parents=True)
    (tmp_path / "distilled" / "student" / "config.json").write_text("{}")
    line = assert_one_error(_generate(spec, tmp_path / "out" / "run"), message)
    assert "teacher" not in line and "config file" not in line and ".." not in line.replace("./no", "")
    assert not (tmp_path / "out").exists()  # the output directory (and its parent) this call made are gone


def test_a_hub_error_is_one_line(tmp_path):
    line = assert_one_error(_generate("no-such-org/no-such-model", tmp_path / "out"),
                            "cannot load model 'no-such-org/no-such-model': ", "; give a hub id")
    assert ".." not in line and ".;" not in line
    assert not (tmp_path / "out").exists()


def test_generate_with_no_problems_removes_only_the_directory_it_made(student_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = ("--dataset", "gsm8k", "--data-path", str(empty))
    assert_one_error(_generate(student_dir, tmp_path / "fresh", *args), "generate.data: no problems")
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "mine").mkdir()
    assert_one_error(_generate(student_dir, tmp_path / "mine", *args), "generate.data: no problems")
    assert (tmp_path / "mine").is_dir()  # made before this call: kept


def test_a_path_through_dotdot_leaves_no_directory_behind(tmp_path, monkeypatch):
    from thinkfast.cli.options import output_directory

    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError), output_directory(Path("a/../b")):
        assert (tmp_path / "b").is_dir()
        raise RuntimeError("the command failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither b nor a stays


def test_recipe_validate_names_a_teacher_gguf_file_that_does_not_exist(tmp_path):
    """A .gguf teacher is never an earlier step's output, so `recipe validate` (which scripts run before the
    work) checks it is there, in the recipe or from --set; a hub id or a model directory is left to loading."""
    recipe = tmp_path / "r.toml"
    recipe.write_text('[teacher]\nmodel = "models/gone.gguf"\n')
    assert_one_error(thinkfast("recipe", "validate", str(recipe)),
                     f"error: {recipe}: teacher.model: models/gone.gguf does not exist (relative to the current "
                     f"directory); point it at a .gguf file, a model directory or a hub id")
    gone = tmp_path / "gone.gguf"
    assert_one_error(thinkfast("recipe", "validate", str(recipe), "--set", f"teacher.model={gone}"),
                     f"error: --set 'teacher.model={gone}': {gone} does not exist; point it at a .gguf file")
    for model in ("HuggingFaceTB/SmolLM2-135M-Instruct", "runs/llamba/student"):
        assert thinkfast("recipe", "validate", str(recipe), "--set", f"teacher.model={model}").exit_code == 0


def test_distill_names_the_recipe_key_of_a_teacher_gguf_file_that_does_not_exist(tmp_path):
    """distill makes the same check as `recipe validate`, before anything loads or is written: the message
    names the recipe file and `teacher.model` (it said only `GGUF file ... does not exist`)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text('[teacher]\nmodel = "models/gone.gguf"\n[[distill.stages]]\nsteps = 1\n')
    out = tmp_path / "out"
    assert_one_error(thinkfast("distill", str(recipe), "-o", str(out)),
                     f"error: {recipe}: teacher.model: models/gone.gguf does not exist (relative to the current "
                     f"directory); point it at a .gguf file")
    assert not out.exists()


# --- kernels the device cannot run -------------------------------------------------------------------

@pytest.fixture
def gpu_kernels_recipe(tmp_path) -> Path:
    """A recipe pinning a CUDA-only kernel, with a teacher that must never be loaded."""
    recipe = tmp_path / "gpu.toml"
    recipe.write_text('[teacher]\nmodel = "no-org/no-teacher"\n[kernels]\nattention = "flash-attn"\n'
                      '[[distill.stages]]\nsteps = 1\nseq_len = 64\nbatch_size = 1\n'
                      'data = { dataset = "synthetic-arith", limit = 4 }\n')
    return recipe


GPU_KERNEL_MESSAGE = "[kernels] attention = 'flash-attn' cannot run on cpu: it needs a CUDA device"


def _no_loading(*args, **kwargs):
    raise AssertionError("a model was loaded before the kernel choice was checked")


def test_generate_refuses_a_gpu_only_kernel_on_the_cpu_before_loading_the_model(gpu_kernels_recipe, tmp_path,
                                                                               monkeypatch):
    """The kernel choice needs no model: a CUDA-only kernel on the CPU is refused before the model loads
    (minutes for a large hub model), not after."""
    monkeypatch.setattr("thinkfast.models.teacher.load_any", _no_loading)
    out = tmp_path / "out"
    assert_one_error(thinkfast("generate", str(gpu_kernels_recipe), "--dataset", "synthetic-arith", "--limit", "2",
                               "--n", "1", "--device", "cpu", "-o", str(out)), GPU_KERNEL_MESSAGE)
    assert not out.exists()


def test_distill_refuses_a_gpu_only_kernel_on_the_cpu_before_loading_the_teacher(gpu_kernels_recipe, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr("thinkfast.models.load_any", _no_loading)
    out = tmp_path / "out"
    assert_one_error(thinkfast("distill", str(gpu_kernels_recipe), "--set", "run.device=cpu", "-o", str(out)),
                     GPU_KERNEL_MESSAGE)
    assert not out.exists()


# --- recipe overrides --------------------------------------------------------------------------------

def test_a_bad_set_value_is_one_line_naming_the_override(tmp_path, monkeypatch):
    """A --set value that does not parse as the key's type, fails its range or names a missing file is
    reported against the override (key and value), not against the recipe file."""
    monkeypatch.setattr("thinkfast.generate.runner.run_generate", _refuse("generate"))
    recipe = tmp_path / "r.toml"
    recipe.write_text("[generate]\nn_samples = 4\n")
    for args, message in [
        (("recipe", "validate", str(recipe), "--set", "generate.temperature=abc"),
         "error: --set 'generate.temperature=abc': expected a number, got 'abc'"),
        (("generate", str(recipe), "--set", "generate.n_samples=0", "-o", str(tmp_path / "out")),
         "error: --set 'generate.n_samples=0': 0 is below the minimum 1"),
        (("generate", "--set", "run.device=gpu", "-o", str(tmp_path / "out")),
         "error: --set 'run.device=gpu': 'gpu' is not 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        (("recipe", "validate", str(recipe), "--set", "generate.data.path=gone.jsonl"),
         "error: --set 'generate.data.path=gone.jsonl': gone.jsonl does not exist (relative to the current "
         "directory)"),
    ]:
        line = assert_one_error(thinkfast(*args), message)
        assert line.startswith(message) and str(recipe) not in line
    assert not (tmp_path / "out").exists()


#: Holds the output directory's lock, as a run writing there would, until killed.
HOLD_LOCK = """
import sys
import time
from pathlib import Path

from thinkfast.output_lock import exclusive_output

with exclusive_output(Path(sys.argv[1]), "generate"):
    print("locked", flush=True)
    time.sleep(300)
"""


@pytest.mark.parametrize("command", ["generate", "distill"])
def test_an_output_directory_another_run_is_writing_in_is_refused_until_that_run_ends(command, tiny_llama_dir,
                                                                                       gsm8k_train_path, tmp_path):
    """Before: a second run (say a re-run while a killed torchrun launcher's workers still ran) wrote into the same
    directory, interleaving samples, and one's merge could delete a file the other appended to."""
    import subprocess
    import sys

    from cli_run import distill_recipe, python_path

    out = tmp_path / "out"
    out.mkdir()
    if command == "generate":
        args = ["generate", "--model", str(tiny_llama_dir), "--data-path", str(gsm8k_train_path), "--limit", "1",
                "--n-samples", "1", "--max-new-tokens", "2", "--template", "plain", "--device", "cpu", "-o", str(out)]
    else:
        recipe = distill_recipe(tmp_path, tiny_llama_dir, gsm8k_train_path, steps=1)
        args = ["distill", str(recipe), "-o", str(out), "--no-progress"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": python_path()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_one_error(thinkfast(*args), f"{out}: another thinkfast run is writing in this directory; ",
                         f"give this {command} another --output-dir")
        assert not any(out.iterdir())
    finally:
        holder.kill()  # a kill, not an exit: the operating system drops the lock all the same
        holder.wait()
    result = thinkfast(*args)
    assert result.exit_code == 0, result.output
