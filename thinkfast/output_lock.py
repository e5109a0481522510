"""One writer per output directory: ``generate`` and ``distill`` lock the directory they write in.

Two invocations writing one output directory at once would interleave their samples or checkpoints, and one's
merge of the per-rank sample files could delete a file the other still appends to. That happens more easily
than it sounds: ``torchrun``'s workers run in sessions of their own and outlive a launcher killed with
``kill -9``, and a re-run started meanwhile writes into the same ``-o``. So a run holds an advisory ``flock``
on the directory itself (under torchrun, rank 0 for the job, taken before any rank writes): the operating system
drops it when the process ends, however it ends, so a killed run leaves no stale lock, and the directory gets
no extra file. On a file system without ``flock`` (some network mounts) the run goes on unlocked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from thinkfast.errors import ThinkfastError

try:
    import fcntl
except ImportError:  # not a POSIX system: no locking
    fcntl = None  # type: ignore[assignment]


class OutputInUseError(ThinkfastError):
    """Another thinkfast run holds the output directory's lock."""


@contextmanager
def exclusive_output(out_dir: Path, command: str) -> Iterator[None]:
    """Hold ``out_dir``'s lock for the ``with`` block; :class:`OutputInUseError` at once if another process holds
    it. ``command`` (``"generate"``, ``"distill"``) names this run in the message."""
    if fcntl is None:
        yield
        return
    fd = os.open(out_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputInUseError(
                f"{out_dir}: another thinkfast run is writing in this directory; wait for it to end or stop it "
                f"(under torchrun, its worker processes too: they outlive a killed launcher), or give this "
                f"{command} another --output-dir") from None
        except OSError:  # no flock on this file system: go on unlocked
            pass
        yield
    finally:
        os.close(fd)  # releases the lock
