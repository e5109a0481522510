"""Running the CLI from tests (pytest puts ``tests/`` on the path): in the test's own process, or as a
two-rank ``torchrun`` job on the CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from thinkfast.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def thinkfast(*args: str) -> Result:
    """``thinkfast ARGS`` in this process; a Python exception other than SystemExit fails the test."""
    return CliRunner().invoke(cli, list(args), prog_name="thinkfast", catch_exceptions=False)


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
