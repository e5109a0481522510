"""Resumable training checkpoints, written atomically.

Layout under ``<output_dir>/checkpoints/``::

    latest                      name of the newest complete checkpoint (one line)
    stage01-step0000200/
        state.pt                model, optimizer and scheduler state dicts (full, unsharded)
        rng.pt                  RNG states of every process (torch CPU/CUDA, Python, NumPy)
        position.json           stage index, step, tokens, data position, training seconds (JSON)

A checkpoint is written into a hidden temporary directory, flushed, renamed into place, and
only then does ``latest`` (replaced with ``os.replace``) point at it, so an interruption at any
moment (Ctrl-C, a crash) leaves the previous checkpoint intact and ``latest`` valid. Older
checkpoints beyond ``keep`` are deleted afterwards.

Model and optimizer states go through ``torch.distributed.checkpoint.state_dict``, so the same
files come from (and load into) a plain module, a DDP-wrapped or an FSDP2-sharded one.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from thinkfast.errors import ThinkfastError

LATEST = "latest"


class CheckpointError(ThinkfastError):
    """A checkpoint directory that cannot be resumed from."""


@dataclass
class Position:
    """Where training stands: enough to continue exactly where it stopped."""

    stage_index: int = 0
    step: int = 0  # optimizer steps completed in this stage
    global_step: int = 0  # optimizer steps completed over all stages
    tokens: int = 0  # tokens consumed in this stage (all processes)
    data_state: dict[str, Any] = field(default_factory=dict)  # the stage's data iterator state
    # training wall seconds of the run, every invocation included, when the checkpoint was written (rank 0's
    # clock; 0 in checkpoints written before it was recorded)
    elapsed_s: float = 0.0

    @property
    def dirname(self) -> str:
        return f"stage{self.stage_index:02d}-step{self.step:07d}"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU and CUDA, Python ``random``, NumPy)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng() -> list[dict[str, Any]]:
    if dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, rng_state())
        return out
    return [rng_state()]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: Below this many free bytes on its device, a failed write is reported as the device being full.
NEARLY_FULL_BYTES = 64 * 2**20


def _write_file(path: Path, write) -> None:
    """Write ``path`` with ``write(fh)`` and sync it; a full device is a :class:`CheckpointError` naming it
    (``torch.save`` reports a short write as a ``RuntimeError`` about the file position, not ``ENOSPC``).

    Ctrl-C during ``torch.save`` stays a ``KeyboardInterrupt``: the archive writer, closing as the interrupt
    unwinds, raises that same ``RuntimeError`` about the file position in its place."""
    try:
        with path.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except (OSError, RuntimeError) as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise exc.__context__ from None
        free = shutil.disk_usage(path.parent).free
        if getattr(exc, "errno", None) != errno.ENOSPC and free >= NEARLY_FULL_BYTES:
            raise
        raise CheckpointError(f"{path}: no space left on the device while writing it ({free / 2**20:.1f} MiB "
                              f"free); free some space, then run again with --resume: the last complete "
                              f"checkpoint is kept") from None


def save_checkpoint(root: Path, position: Position, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, *, keep: int = 2, elapsed: Callable[[], float] | None = None) -> Path | None:
    """Write a checkpoint under ``root`` (``<output_dir>/checkpoints``); every process must call it.

    ``elapsed()``: the run's training seconds, read once the model and optimizer states are written (so the
    time they took counts), into ``position.elapsed_s``. Returns the checkpoint directory on rank 0, None elsewhere.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    rngs = _gather_rng()
    if _rank() != 0:
        _barrier()
        return None
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / position.dirname
    tmp = root / f".tmp-{position.dirname}-{os.getpid()}"
    tmp.mkdir()
    state = {"model": model_state, "optimizer": optim_state, "scheduler": scheduler.state_dict()}
    try:
        _write_file(tmp / "state.pt", lambda fh: torch.save(state, fh))
        _write_file(tmp / "rng.pt", lambda fh: torch.save(rngs, fh))
        if elapsed is not None:
            position = replace(position, elapsed_s=round(elapsed(), 3))
        _write_file(tmp / "position.json", lambda fh: fh.write(json.dumps(asdict(position), indent=2).encode()))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a partial checkpoint only takes space
        raise
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    pointer = root / f".{LATEST}.tmp"
    _write_file(pointer, lambda fh: fh.write(f"{final.name}\n".encode()))
    os.replace(pointer, root / LATEST)
    _fsync_dir(root)
    checkpoints = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("stage")),
                         key=lambda p: p.stat().st_mtime_ns)
    for old in [p for p in checkpoints if p != final][: max(len(checkpoints) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The directory ``latest`` names, or None when there is no checkpoint."""
    pointer = root / LATEST
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.pt").exists():
        raise CheckpointError(f"{pointer} names {path.name}, which is missing or incomplete; "
                              f"delete {root} to start over")
    return path


def read_position(path: Path) -> Position:
    """The :class:`Position` stored in checkpoint directory ``path``."""
    try:
        return Position(**json.loads((path / "position.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path / 'position.json'}: unreadable ({exc}); delete {path.parent} "
                              f"to start over") from None


def check_processes(path: Path, world_size: int) -> None:
    """Refuse to resume checkpoint ``path`` with another number of processes than wrote it (its ``rng.pt``
    holds one RNG state per process); every process calls it, before the models load."""
    try:
        written = len(torch.load(path / "rng.pt", map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, TypeError, EOFError) as exc:
        raise CheckpointError(f"{path / 'rng.pt'}: unreadable ({exc}); delete {path.parent} to start over") from None
    if written != world_size:
        how = "without torchrun (one process)" if written == 1 else f"under torchrun --nproc-per-node {written}"
        raise CheckpointError(f"--resume: {path} was written by {written} process{'es' if written != 1 else ''} "
                              f"and this run has {world_size}; resume {how}: each process continues its own "
                              f"share of the data and its own random state")


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None) -> None:
    """Load model, optimizer, scheduler and this process's RNG state from ``path`` (every process calls it).

    With ``optimizer`` None only the model weights and RNG states load (a checkpoint taken at the
    boundary between two stages, whose optimizer belonged to the finished stage).
    """
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if optimizer is None:
        set_model_state_dict(model, state["model"], options=options)
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=options)
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    rngs = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
    rank = _rank()
    if rank >= len(rngs):
        raise CheckpointError(f"{path}: written by {len(rngs)} processes, cannot resume process {rank}; "
                              f"resume with --nproc-per-node {len(rngs)}")
    set_rng_state(rngs[rank])
