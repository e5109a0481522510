"""Distillation plumbing: LR schedules, parameter groups, checkpoints, metrics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from thinkfast.distill import checkpoint as ckpt
from thinkfast.distill.metrics import MetricsLog, read_metrics
from thinkfast.distill.params import expand_groups, layer_index, param_group, set_trainable
from thinkfast.distill.schedule import build_scheduler, lr_factor


class _Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.input_norm = nn.LayerNorm(d)
        self.mixer = nn.Linear(d, d)
        self.mlp = nn.Linear(d, d)


class _Named(nn.Module):
    """A small module with the parameter names of a ThinkfastLM (for grouping and checkpoint tests)."""

    def __init__(self, d: int = 8, n_layers: int = 3, vocab: int = 11):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(_Block(d) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids)
        for block in self.layers:
            x = x + block.mlp(torch.tanh(block.mixer(block.input_norm(x))))
        return self.lm_head(self.norm(x))


# ---- schedules -------------------------------------------------------------------------------

def test_warmup_is_linear_then_cosine_reaches_min_just_after_the_last_step():
    f = [lr_factor(s, 21, schedule="cosine", warmup_steps=4, min_lr_ratio=0.1) for s in range(22)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f[4] == pytest.approx(1.0)
    assert f[21] == pytest.approx(0.1)  # step total_steps: after the last update
    assert f[20] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 16 / 17))) and f[20] > 0.1
    assert all(a > b for a, b in zip(f[4:], f[5:], strict=False))
    assert lr_factor(12, 21, schedule="cosine", warmup_steps=4, min_lr_ratio=0.0) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 8 / 17)))


def test_wsd_is_flat_then_decays_in_the_last_fraction():
    f = [lr_factor(s, 10, schedule="wsd", warmup_steps=2, decay_fraction=0.3) for s in range(10)]
    assert f[:2] == pytest.approx([0.5, 1.0])
    assert f[2:7] == pytest.approx([1.0] * 5)
    assert f[7:] == pytest.approx([3 / 4, 2 / 4, 1 / 4])  # min (0) only after the last update


def test_constant_and_scheduler_drive_the_optimizer():
    assert [lr_factor(s, 5, schedule="constant", warmup_steps=1) for s in range(5)] == [1.0] * 5
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.4)
    sched = build_scheduler(opt, 4, schedule="cosine", warmup_steps=2)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.2, 0.4, 0.4, 0.2])  # peak right after warm-up; every update moves


# ---- parameter groups ------------------------------------------------------------------------

def test_every_parameter_has_one_group():
    model = _Named()
    groups = {name: param_group(name) for name, _ in model.named_parameters()}
    assert groups["embed_tokens.weight"] == "embeddings"
    assert groups["layers.1.mixer.weight"] == "mixers"
    assert groups["layers.2.mlp.bias"] == "mlps"
    assert groups["layers.0.input_norm.weight"] == "norms"
    assert groups["norm.weight"] == "norms"
    assert groups["lm_head.weight"] == "lm_head"
    assert layer_index("module._orig_mod.layers.12.mixer.in_proj.weight") == 12
    assert layer_index("norm.weight") is None
    assert expand_groups(["all"]) == {"mixers", "mlps", "norms", "embeddings", "lm_head"}
    with pytest.raises(ValueError):
        expand_groups(["attention"])


def test_set_trainable_groups_and_layer_subset():
    model = _Named()
    trained = set_trainable(model, ["mixers", "norms"], layers=[1])
    assert trained == ["layers.1.input_norm.weight", "layers.1.input_norm.bias", "layers.1.mixer.weight",
                       "layers.1.mixer.bias", "norm.weight", "norm.bias"]
    assert all(p.requires_grad == (n in trained) for n, p in model.named_parameters())
    everything = set_trainable(model, ["all"])
    assert len(everything) == len(list(model.parameters()))


# ---- checkpoints -----------------------------------------------------------------------------

def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = _Named()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = build_scheduler(opt, 12, schedule="cosine", warmup_steps=2)
    return model, opt, sched


def _train(model, opt, sched, steps: int) -> None:
    for _ in range(steps):
        ids = torch.randint(0, 11, (2, 5))  # draws from the torch RNG: checks that it is restored too
        loss = nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_resume_from_checkpoint_is_bit_exact(tmp_path):
    model, opt, sched = _setup()
    _train(model, opt, sched, 12)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    model, opt, sched = _setup()
    _train(model, opt, sched, 5)
    saved = ckpt.save_checkpoint(tmp_path, ckpt.Position(stage_index=0, step=5, global_step=5,
                                                         data_state={"row": 10}), model, opt, sched)
    _train(model, opt, sched, 2)  # work after the checkpoint is lost on "interruption"

    model, opt, sched = _setup(seed=123)  # a fresh process: different init and RNG
    path = ckpt.latest_checkpoint(tmp_path)
    assert path == saved
    assert ckpt.read_position(path).data_state == {"row": 10}
    ckpt.load_checkpoint(path, model, opt, sched)
    _train(model, opt, sched, 7)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _setup()
    first = ckpt.save_checkpoint(tmp_path, ckpt.Position(step=1, global_step=1), model, opt, sched)
    real_save = torch.save
    calls = []

    def interrupted(obj, fh):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save(obj, fh)

    monkeypatch.setattr(ckpt.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, ckpt.Position(step=2, global_step=2), model, opt, sched)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert ckpt.latest_checkpoint(tmp_path) == first
    assert ckpt.read_position(first).step == 1
    model2, opt2, sched2 = _setup(seed=5)
    ckpt.load_checkpoint(first, model2, opt2, sched2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values(),
                                                 strict=True))
    # the next save cleans the half-written directory up and keeps at most `keep` checkpoints
    for step in (3, 4, 5):
        ckpt.save_checkpoint(tmp_path, ckpt.Position(step=step, global_step=step), model, opt, sched, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["latest", "stage00-step0000004", "stage00-step0000005"]


def test_missing_checkpoint_directory_is_a_clear_error(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    (tmp_path / "latest").write_text("stage00-step0000009\n")
    with pytest.raises(ckpt.CheckpointError, match="missing or incomplete"):
        ckpt.latest_checkpoint(tmp_path)


def test_metrics_log_truncates_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in range(1, 6):
        log.write({"global_step": step, "loss": 1.0 / step})
    MetricsLog(path, resume_global_step=3).write({"global_step": 4, "loss": 0.0})
    records = read_metrics(path)
    assert [r["global_step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["loss"] == 0.0 and "time" in records[-1]


def test_metrics_log_resumes_past_a_line_cut_short(tmp_path):
    """A run killed while writing a line (SIGKILL, a full disk) left half a JSON object: --resume crashed on it
    with a JSONDecodeError traceback after loading the teacher."""
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in range(1, 4):
        log.write({"global_step": step, "loss": 1.0})
    with path.open("a") as fh:
        fh.write('{"global_step": 4, "lo')
    MetricsLog(path, resume_global_step=3).write({"global_step": 4, "loss": 0.5})
    assert [r["global_step"] for r in read_metrics(path)] == [1, 2, 3, 4]


_STEPS_1_2 = b'{"global_step": 1, "loss": 1.0}\n{"global_step": 2, "loss": 1.0}'


@pytest.mark.parametrize("content", [
    _STEPS_1_2 + b"\n" + b'{"global_step": 3, "lo',  # killed mid-line
    _STEPS_1_2,  # killed between the object and its newline
    b"\n" + _STEPS_1_2 + b"\n\n  \n",  # blank lines
    b"\xef\xbb\xbf" + _STEPS_1_2 + b"\n",  # a byte-order mark (an editor saved the file)
], ids=["cut", "complete-without-newline", "blank-lines", "bom"])
def test_metrics_log_resume_keeps_the_finished_steps_and_appends_on_a_line_of_its_own(tmp_path, content):
    """Before: a byte-order mark stopped the resume with 'not valid JSON'."""
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    MetricsLog(path, resume_global_step=2).write({"global_step": 3, "loss": 0.5})
    assert [r["global_step"] for r in read_metrics(path)] == [1, 2, 3]
    assert path.read_text().count("\n") == 3


@pytest.mark.parametrize("line, says", [
    (b"not json\n", "not valid JSON"),  # ends in a newline: written whole, so damaged, not cut short
    (b'{"global_step": 2, "stage": "\xff"}\n', r"not UTF-8 text \(byte 0xff\)"),
    (b"[2, 1.0]\n", "expected a JSON object, got list"),
], ids=["malformed-last-line", "not-utf8", "not-an-object"])
def test_metrics_log_resume_names_any_damaged_line_but_a_cut_last_one(tmp_path, line, says):
    """Before: a damaged last line that ended in a newline was dropped silently, a line that is not a JSON object
    was kept as if it were step 0, and bytes that are not UTF-8 were a UnicodeDecodeError traceback."""
    from thinkfast.errors import DataError

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"global_step": 1}\n' + line)
    with pytest.raises(DataError, match=rf"{path}:2: {says}.*start a new --output-dir"):
        MetricsLog(path, resume_global_step=2)


def test_read_metrics_leaves_out_a_last_line_cut_short(tmp_path):
    """Before: a JSONDecodeError traceback."""
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_STEPS_1_2 + b'\n{"global_st')
    assert [r["global_step"] for r in read_metrics(path)] == [1, 2]


def test_a_resume_that_fails_while_rewriting_the_metrics_loses_none_of_them(tmp_path):
    """The file of finished steps was truncated and then rewritten in place: a process killed or a disk filled
    during the rewrite lost the metrics of the whole run. Here the rewrite really fails halfway (a file size
    limit: EFBIG, as ENOSPC on a full disk)."""
    import resource
    import subprocess
    import sys

    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in range(1, 201):
        log.write({"global_step": step, "loss": 1.0})
    before = path.read_bytes()
    limit = len(before) // 2
    code = f"from pathlib import Path; from thinkfast.distill.metrics import MetricsLog; " \
           f"MetricsLog(Path({str(path)!r}), resume_global_step=150)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert done.returncode != 0 and "File too large" in done.stderr
    assert path.read_bytes() == before
    MetricsLog(path, resume_global_step=150).write({"global_step": 151, "loss": 0.5})
    assert [r["global_step"] for r in read_metrics(path)] == list(range(1, 152))


def test_metrics_log_names_a_damaged_line_before_the_last(tmp_path):
    from thinkfast.errors import DataError

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"global_step": 1}\nnot json\n{"global_step": 2}\n')
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON.*start a new --output-dir"):
        MetricsLog(path, resume_global_step=2)
