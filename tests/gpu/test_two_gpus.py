"""On two CUDA GPUs under ``torchrun``: distillation with DDP and with FSDP2 (NCCL), resuming FSDP, and generation
sharded over the GPUs. The CPU tests cover the same semantics with gloo (``tests/test_distill.py``,
``tests/test_generate_cli.py``); FSDP2 runs only on GPUs, so only here.

Run on a machine with at least two GPUs, with the tokenizer directory that the CPU tests save
(``.models/smollm2-tokenizer``) there: ``python -m pytest -m gpu tests/gpu/test_two_gpus.py``. With the device
tool, pack it first (``tar czf .models/smollm2-tokenizer.tar.gz -C .models smollm2-tokenizer``: 0.6 MB, which
fits beside ``.gpu`` in the 64 MiB a run carries), carry ``[".gpu", ".models/smollm2-tokenizer.tar.gz"]`` and
unpack it there (``tar xzf .models/smollm2-tokenizer.tar.gz -C .models``) before pytest.
Everything is float32 (``run.dtype``/``--dtype``), so that one GPU with the combined batch is the reference up to
reduction order; each comparison prints the largest relative difference it saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_run import python_path, torchrun

pytestmark = pytest.mark.gpu
if torch.cuda.device_count() < 2:
    pytest.skip("needs two CUDA GPUs", allow_module_level=True)

# float32 everywhere, but reductions run in other orders on one GPU and on two, and Adam divides by the
# gradients' running RMS, which magnifies the differences of small gradients
REL_TOL = 1e-3

#: run_distill under torchrun, stopped by a KeyboardInterrupt on every rank after optimizer step STOP_AT
#: (0: never) or resumed from the output directory's checkpoint: ``job.py RECIPE OUT STOP_AT resume|fresh``.
DISTILL_JOB = """
import sys
from pathlib import Path

from thinkfast.config.loader import load_recipe
from thinkfast.distill.engine import run_distill

recipe, out, stop_at, mode = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def on_step(position):
    if position.step == stop_at:
        raise KeyboardInterrupt


try:
    run_distill(load_recipe(recipe), out, resume=mode == "resume", on_step=on_step)
except KeyboardInterrupt:
    sys.exit(3)
"""


def _recipe(tmp_path: Path, teacher: Path, name: str, batch_size: int, strategy: str = "ddp",
            dtype: str = "float32") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
[run]
device = "cuda"
dtype = "{dtype}"
seed = 0
[teacher]
model = "{teacher}"
[student]
kind = "llamba"
options = {{ conv_kernel = 4, chunk_size = 16 }}
[distill]
strategy = "{strategy}"
progress = false
[[distill.stages]]
kind = "kd"
steps = 4
seq_len = 128
batch_size = {batch_size}
lr = 3e-3
warmup_steps = 0
checkpoint_every = 2
loss_on = "all"
data = {{ dataset = "synthetic-arith", split = "train", limit = 16 }}
""")
    return path


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


def _compare_students(got: Path, want: Path) -> float:
    """The largest relative difference of any tensor of two saved students (same names required)."""
    from safetensors.torch import load_file

    a, b = load_file(got / "student" / "model.safetensors"), load_file(want / "student" / "model.safetensors")
    assert a.keys() == b.keys()
    return max(_rel_diff(a[name], b[name]) for name in b)


def _losses(out: Path) -> list[float]:
    from thinkfast.distill.metrics import read_metrics

    return [record["loss"] for record in read_metrics(out / "metrics.jsonl")]


def _distill_job(tmp_path: Path, recipe: Path, out: Path, stop_at: int = 0, mode: str = "fresh"):
    script = tmp_path / "job.py"
    script.write_text(DISTILL_JOB)
    return torchrun(str(recipe), str(out), str(stop_at), mode, script=script, cwd=tmp_path, timeout=400)


@pytest.fixture(scope="module")
def one_gpu(tiny_llama_dir, tmp_path_factory) -> Path:
    """The reference: one GPU with batch 2 (the two ranks' batch 1 each, combined)."""
    from thinkfast.config.loader import load_recipe
    from thinkfast.distill.engine import run_distill

    tmp = tmp_path_factory.mktemp("one_gpu")
    run_distill(load_recipe(_recipe(tmp, tiny_llama_dir, "one", 2)), tmp / "out", progress=False)
    return tmp / "out"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gpus_train_the_student_one_gpu_trains_with_their_combined_batch(strategy, one_gpu, tiny_llama_dir,
                                                                            tmp_path):
    job = _distill_job(tmp_path, _recipe(tmp_path, tiny_llama_dir, strategy, 1, strategy), tmp_path / "out")
    assert job.returncode == 0, job.stderr[-4000:]
    losses, reference = _losses(tmp_path / "out"), _losses(one_gpu)
    print(f"{strategy}: losses {losses} vs one GPU {reference}")
    assert losses == pytest.approx(reference, rel=REL_TOL)
    assert len(set(reference)) == 4  # it trained
    worst = _compare_students(tmp_path / "out", one_gpu)
    print(f"{strategy}: largest relative difference of a student tensor {worst:.2e}")
    assert worst < REL_TOL


def test_fsdp_interrupted_and_resumed_on_two_gpus_ends_where_the_uninterrupted_run_ends(one_gpu, tiny_llama_dir,
                                                                                       tmp_path):
    recipe, out = _recipe(tmp_path, tiny_llama_dir, "fsdp", 1, "fsdp"), tmp_path / "out"
    stopped = _distill_job(tmp_path, recipe, out, stop_at=3)
    assert stopped.returncode != 0
    assert (out / "checkpoints" / "latest").read_text().strip() == "stage00-step0000002"
    assert not (out / "student").exists()
    resumed = _distill_job(tmp_path, recipe, out, mode="resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert _losses(out) == pytest.approx(_losses(one_gpu), rel=REL_TOL)
    worst = _compare_students(out, one_gpu)
    print(f"fsdp resumed: largest relative difference of a student tensor {worst:.2e}")
    assert worst < REL_TOL


def test_fsdp_in_bfloat16_on_two_gpus_trains_and_writes_a_loadable_student(tiny_llama_dir, tmp_path):
    """The default precision (``run.dtype = "auto"``: FSDP2's mixed-precision policy computes in bfloat16 over
    float32 master weights): the loss falls and the student loads and runs."""
    from thinkfast.models import load_model

    job = _distill_job(tmp_path, _recipe(tmp_path, tiny_llama_dir, "bf16", 1, "fsdp", "auto"), tmp_path / "out")
    assert job.returncode == 0, job.stderr[-4000:]
    losses = _losses(tmp_path / "out")
    print(f"fsdp bf16: losses {losses}")
    assert losses[-1] < losses[0]
    model, _ = load_model(tmp_path / "out" / "student", with_tokenizer=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # saved from the float32 master weights
    ids = torch.arange(1, 17).unsqueeze(0)
    assert torch.isfinite(model(ids).logits).all()


def _samples(out: Path) -> dict[tuple[str, int], str]:
    rows = (json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines())
    return {(row["problem_id"], row["sample_index"]): row["text"] for row in rows}


def test_generate_on_two_gpus_gives_the_one_gpu_samples(tiny_llama_dir, tmp_path):
    """Each rank samples its problems on its own GPU (``cuda:LOCAL_RANK``); the merged samples are the one-GPU
    run's (the sampler's random numbers depend on the problem and sample, not on the rank or batch)."""
    args = ["generate", "--model", str(tiny_llama_dir), "--dataset", "synthetic-arith", "--limit", "6",
            "--n-samples", "2", "--max-new-tokens", "12", "--batch-size", "4", "--template", "plain", "--device",
            "cuda", "--dtype", "float32", "--no-compile"]
    two = torchrun(*args, "-o", str(tmp_path / "two"), cwd=tmp_path, timeout=400)
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run([sys.executable, "-m", "thinkfast", *args, "-o", str(tmp_path / "one")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=400, env={**os.environ, "PYTHONPATH": python_path()})
    assert one.returncode == 0, one.stderr[-4000:]
    assert _samples(tmp_path / "two") == _samples(tmp_path / "one")
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["world_size"] == 2 and len(run["devices"]) == 2
    print("devices:", run["devices"])
