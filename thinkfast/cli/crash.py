"""A crash (a bug in thinkfast, not a user error) under ``torchrun``: one traceback for the job, not one per rank.

Every rank runs the same code, so a bug usually crashes all of them the same way, at about the same time, and
N interleaved copies of one traceback bury it. The ranks that crash compare notes through the store the
``torchrun`` agent serves to its workers (``MASTER_ADDR:MASTER_PORT``): each records, after printing, where it
crashed (the exception's type and the frames it went through). The lowest rank that crashed a given way prints
its traceback, headed ``rank R crashed:``; a higher rank that crashed the same way prints one line,
``rank R: crashed the same way as rank L (ZeroDivisionError: ...); see rank L's traceback``. A rank waits up
to :data:`CRASH_GRACE_S` for the lower ranks to report (less when they all have, or when the launcher stops
it, which happens once any rank has exited with the error), so a crash only one rank hit, or a different
crash, still shows its own traceback. Without that store (another launcher) every rank prints its traceback.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
import traceback
from typing import Any, NoReturn

from thinkfast.cli.ranks import job_rank

#: Seconds a crashed rank waits for lower ranks to say whether they crashed the same way.
CRASH_GRACE_S = 5.0
#: Seconds between two looks at the store while waiting.
_POLL_S = 0.05


class _Stopped(BaseException):
    """The launcher asked this rank to stop (SIGTERM) while it waited (not an ``Exception``: nothing that
    guards a store call may swallow it)."""


def report_crash(exc: BaseException) -> NoReturn:
    """Print ``exc``'s traceback, or one line pointing at a lower rank's identical one, and exit 1."""
    rank = job_rank()
    fingerprint = crash_fingerprint(exc)
    store = _agent_store()
    same_as = None
    if store is not None and rank > 0:
        same_as = _lowest_rank_that_crashed_alike(store, rank, fingerprint)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the launcher's stop must not cut the report
    try:
        if same_as is None:
            print(f"rank {rank} crashed:", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
        else:
            summary = traceback.format_exception_only(exc)[-1].strip()
            print(f"rank {rank}: crashed the same way as rank {same_as} ({summary}); see rank {same_as}'s "
                  f"traceback", file=sys.stderr)
        sys.stderr.flush()
        if store is not None:
            _try(lambda: store.set(_key(rank), fingerprint))  # after printing: higher ranks' lines come after it
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(1)


def crash_fingerprint(exc: BaseException) -> str:
    """What makes two crashes "the same": the exception's type and every frame (file, line, function) its
    traceback went through; not the message, which may name the rank's device or shard."""
    frames = [(frame.filename, frame.lineno, frame.name) for frame in traceback.extract_tb(exc.__traceback__)]
    text = repr((type(exc).__module__, type(exc).__qualname__, frames))
    return hashlib.sha1(text.encode()).hexdigest()


def _lowest_rank_that_crashed_alike(store: Any, rank: int, fingerprint: str) -> int | None:
    """The lowest rank below ``rank`` that recorded ``fingerprint``, once every lower rank has recorded a crash,
    :data:`CRASH_GRACE_S` has passed or the launcher stops this rank; None if there is none."""
    def on_sigterm(signum, frame):
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    recorded: dict[int, str] = {}
    deadline = time.monotonic() + CRASH_GRACE_S
    try:
        while True:
            for lower in range(rank):
                if lower not in recorded and (theirs := _recorded(store, lower)) is not None:
                    recorded[lower] = theirs
            alike = [lower for lower, theirs in recorded.items() if theirs == fingerprint]
            if alike or len(recorded) == rank or time.monotonic() > deadline:
                return min(alike, default=None)
            time.sleep(_POLL_S)
    except _Stopped:
        # stopped because a rank exited with its crash: it recorded it just before, so look once more
        alike = [lower for lower in range(rank) if _recorded(store, lower) == fingerprint]
        return min(alike, default=None)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _recorded(store: Any, rank: int) -> str | None:
    """The fingerprint ``rank`` recorded, or None if it has not (yet) crashed."""
    key = _key(rank)
    return _try(lambda: store.get(key).decode() if store.check([key]) else None)


def _agent_store() -> Any:
    """A client of the store the ``torchrun`` agent serves to its workers, or None outside torchrun."""
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in env or "MASTER_PORT" not in env:
        return None

    def connect():
        from datetime import timedelta

        from torch.distributed import TCPStore

        return TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False,
                        timeout=timedelta(seconds=5), wait_for_workers=False)
    return _try(connect)


def _key(rank: int) -> str:
    """The store key under which ``rank`` records its crash in this run (and this restart of it)."""
    env = os.environ
    return (f"thinkfast/crash/{env.get('TORCHELASTIC_RUN_ID', '')}/"
            f"{env.get('TORCHELASTIC_RESTART_COUNT', '0')}/rank{rank}")


def _try(call) -> Any:
    """``call()``, or None if the store cannot be reached: reporting the crash must not crash."""
    try:
        return call()
    except Exception:
        return None
