"""Running the CLI from tests (pytest puts ``tests/`` on the path): in the test's own process, or as a
two-rank ``torchrun`` job on the CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner, Result

from thinkfast.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def thinkfast(*args: str) -> Result:
    """``thinkfast ARGS`` in this process; a Python exception other than SystemExit fails the test."""
    return CliRunner().invoke(cli, list(args), prog_name="thinkfast", catch_exceptions=False)


def subcommands(group: click.Group = cli, path: tuple[str, ...] = ()):
    """``(path, command)`` for every subcommand of the CLI, nested groups' too (``("recipe", "show")``)."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from subcommands(command, (*path, name))
        else:
            yield (*path, name), command


def distill_recipe(tmp_path: Path, model: Path, data: Path, steps: int) -> Path:
    """``tmp_path/distill.toml``: one ``hidden`` stage of ``steps`` steps (32 tokens, batch 2, 8 GSM8K problems
    from ``data``) distilling ``model`` into a small Llamba on the CPU."""
    recipe = tmp_path / "distill.toml"
    recipe.write_text(f"""
[run]
device = "cpu"
[teacher]
model = "{model}"
[student]
kind = "llamba"
options = {{ conv_kernel = 2, chunk_size = 16 }}
[[distill.stages]]
kind = "hidden"
steps = {steps}
seq_len = 32
batch_size = 2
warmup_steps = 0
loss_on = "all"
data = {{ dataset = "gsm8k", path = "{data}", split = "train", limit = 8 }}
""")
    return recipe


def free_port() -> str:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def python_path() -> str:
    """``PYTHONPATH`` for a child process: the project root first, then whatever the environment has (a GPU
    machine's setup puts the CUDA kernel packages there)."""
    return os.pathsep.join(part for part in (str(ROOT), os.environ.get("PYTHONPATH", "")) if part)


def torchrun(*args: str, script: Path | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT,
             timeout: float = 120) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m thinkfast ARGS`` (or ``SCRIPT ARGS``) on the CPU, one thread per rank,
    hub offline; the launcher stops the other rank once one fails, as it does on GPUs."""
    program = [str(script)] if script is not None else ["-m", "thinkfast"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", free_port(),
           *program, *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path(),
                **(env or {})}
    full_env.pop("THINKFAST_TRACEBACK", None)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
