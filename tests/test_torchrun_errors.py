"""Errors under ``torchrun``: every rank exits non-zero, and the user reads one message, not one per rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from thinkfast.cli import cli, ranks

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m thinkfast ARGS`` on the CPU (the launcher stops the other ranks once
    one fails, as it does on GPUs)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", _free_port(),
           "-m", "thinkfast", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("THINKFAST_TRACEBACK", None)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_a_bad_recipe_key_is_reported_once_not_once_per_rank(tmp_path):
    result = _torchrun("generate", "--model", str(tmp_path / "m"), "--set", "generate.bogus=1", "-o",
                       str(tmp_path / "out"))
    assert result.returncode != 0
    assert result.stderr.count("unknown key") == 1, result.stderr
    assert "error: --set 'generate.bogus=1': unknown key" in result.stderr


def test_a_missing_data_file_stops_a_two_rank_distill_with_one_message(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
[run]
device = "cpu"
[teacher]
model = "{tmp_path / 'teacher'}"
[[distill.stages]]
kind = "kd"
steps = 1
data = {{ dataset = "gsm8k", path = "{tmp_path / 'nope.jsonl'}" }}
""")
    result = _torchrun("distill", str(recipe), "-o", str(tmp_path / "out"))
    assert result.returncode != 0
    assert result.stderr.count("nope.jsonl") == 1, result.stderr
    assert "error: " in result.stderr and "rank 1" not in result.stderr


def test_an_error_only_another_rank_hit_is_still_printed_naming_the_rank(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(ranks, "RANK_ZERO_GRACE_S", 0.0)  # rank 0 carried on: nobody stops this rank
    result = CliRunner().invoke(cli, ["generate", "--set", "generate.bogus=1"], prog_name="thinkfast")
    assert result.exit_code == 2
    assert result.stderr.startswith("rank 1: error: --set 'generate.bogus=1': unknown key"), result.stderr


def test_ctrl_c_is_reported_by_rank_zero_only(monkeypatch):
    from thinkfast.cli import generate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "load_recipe", interrupted)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, expected in (("0", "interrupted"), ("1", "")):
        monkeypatch.setenv("RANK", rank)
        result = CliRunner().invoke(cli, ["generate"], prog_name="thinkfast")
        assert result.exit_code == 130 and result.stderr.strip().startswith(expected), result.stderr
        assert expected or not result.stderr.strip()


def test_torchrun_passes_every_subcommand_option_through(capsys):
    """torchrun parses its whole command line and stops at an option that could abbreviate two of its own
    (``--n`` -> --nnodes, --nproc-per-node, ...); every option a subcommand has under some name reaches it."""
    import click
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()
    refused = []
    for name, command in cli.commands.items():
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            passed = []
            for opt in param.opts + param.secondary_opts:
                try:
                    parser.parse_args(["--nproc-per-node", "2", "-m", "thinkfast", name, opt, "1"])
                except SystemExit:
                    continue
                passed.append(opt)
            if not passed:
                refused.append(f"{name} {'/'.join(param.opts)}")
    capsys.readouterr()
    assert not refused
