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

A rank that failed only because another rank went away while it waited for it in a collective operation (gloo's
"Connection closed by peer" when the other process exits, NCCL's aborted communicator) has nothing of its own
to show: it prints one line, ``rank R: stopped because another rank of the job went away during a collective
operation (...); that rank's message says why``, and records that it stopped, so the rank that did crash
prints its traceback without waiting for it. ``THINKFAST_TRACEBACK=1`` prints the traceback anyway.

The store is only ever used from a daemon thread that the report waits for no longer than that: a store that
accepts connections but never answers blocks torch's ``TCPStore`` client forever, whatever its timeout, and
must not turn a crash into a job that hangs without a word.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
import threading
import time
import traceback
from typing import Any, NoReturn

from thinkfast.cli.ranks import job_rank
from thinkfast.plugin_guard import traceback_wanted

#: Seconds a crashed rank waits for lower ranks to say whether they crashed the same way.
CRASH_GRACE_S = 5.0
#: Seconds between two looks at the store while waiting.
_POLL_S = 0.05
#: Seconds the store may take to connect or to take this rank's record, at the most.
_STORE_S = 2.0

#: What a rank records when it stopped because another went away (no crash of its own to compare).
PEER_WENT_AWAY = "peer-went-away"
#: How torch.distributed's backends say that the other end of a collective is gone.
_PEER_GONE = re.compile(r"Connection (?:closed|reset) by peer|Broken pipe|communicator was aborted", re.IGNORECASE)


class _Stopped(BaseException):
    """The launcher asked this rank to stop (SIGTERM) while it waited (not an ``Exception``: nothing that
    guards a store call may swallow it)."""


def report_crash(exc: BaseException) -> NoReturn:
    """Print ``exc``'s traceback, or one line pointing at a lower rank's identical one (or, when another rank
    went away under a collective, at that rank's message), and exit 1."""
    rank = job_rank()
    peer_gone = None if traceback_wanted() else peer_went_away(exc)
    fingerprint = PEER_WENT_AWAY if peer_gone else crash_fingerprint(exc)
    same_as = _lowest_rank_that_crashed_alike(rank, fingerprint) if rank > 0 and not peer_gone else None
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the launcher's stop must not cut the report
    try:
        if peer_gone:
            print(f"rank {rank}: stopped because another rank of the job went away during a collective operation "
                  f"({peer_gone}); that rank's message says why", file=sys.stderr)
        elif same_as is None:
            print(f"rank {rank} crashed:", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
        else:
            summary = traceback.format_exception_only(exc)[-1].strip()
            print(f"rank {rank}: crashed the same way as rank {same_as} ({summary}); see rank {same_as}'s "
                  f"traceback", file=sys.stderr)
        sys.stderr.flush()
        # recorded after printing, so that higher ranks' lines come after it
        _in_background(lambda: _record(rank, fingerprint)).join(_STORE_S)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(1)


def peer_went_away(exc: BaseException) -> str | None:
    """If ``exc`` (or an exception it was raised from) is torch.distributed reporting that the other end of a
    collective is gone, the phrase that says so (e.g. ``"Connection closed by peer"``); else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        frames = traceback.extract_tb(exc.__traceback__)
        in_torch_distributed = bool(frames) and "torch/distributed/" in frames[-1].filename.replace("\\", "/")
        if isinstance(exc, RuntimeError) and in_torch_distributed and (found := _PEER_GONE.search(str(exc))):
            return found.group(0)
        exc = exc.__cause__ or exc.__context__
    return None


def crash_fingerprint(exc: BaseException) -> str:
    """What makes two crashes "the same": the exception's type and every frame (file, line, function) its
    traceback went through; not the message, which may name the rank's device or shard."""
    frames = [(frame.filename, frame.lineno, frame.name) for frame in traceback.extract_tb(exc.__traceback__)]
    text = repr((type(exc).__module__, type(exc).__qualname__, frames))
    return hashlib.sha1(text.encode()).hexdigest()


def _lowest_rank_that_crashed_alike(rank: int, fingerprint: str) -> int | None:
    """The lowest rank below ``rank`` that recorded ``fingerprint``, once every lower rank has recorded a crash,
    :data:`CRASH_GRACE_S` has passed or the launcher stops this rank; None if there is none."""
    recorded: dict[int, str] = {}  # filled by the thread that looks at the store

    def look() -> None:
        store = _agent_store()
        deadline = time.monotonic() + CRASH_GRACE_S
        while store is not None and time.monotonic() < deadline:
            for lower in range(rank):
                if lower not in recorded and (theirs := _recorded(store, lower)) is not None:
                    recorded[lower] = theirs
            if fingerprint in recorded.values() or len(recorded) == rank:
                return
            time.sleep(_POLL_S)

    def on_sigterm(signum, frame):
        raise _Stopped

    looking = _in_background(look)
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        looking.join(CRASH_GRACE_S + _STORE_S)
    except _Stopped:
        # stopped because a rank exited with its crash: it recorded it just before, so give it one more look
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        looking.join(4 * _POLL_S)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return min((lower for lower, theirs in list(recorded.items()) if theirs == fingerprint), default=None)


def _in_background(work) -> threading.Thread:
    """``work()`` started in a daemon thread, which the process does not wait for at exit."""
    thread = threading.Thread(target=lambda: _try(work), name="thinkfast-crash-store", daemon=True)
    thread.start()
    return thread


def _record(rank: int, fingerprint: str) -> None:
    """Record ``rank``'s crash in the store, if there is one."""
    store = _agent_store()
    if store is not None:
        store.set(_key(rank), fingerprint)


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
                        timeout=timedelta(seconds=_STORE_S), wait_for_workers=False)
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
