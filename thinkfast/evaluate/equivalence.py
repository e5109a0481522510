"""Answer equivalence with math-verify, in worker processes with a hard per-check timeout.

math-verify's own timeouts use ``SIGALRM``, which only works in a process's main thread and
cannot interrupt long computations in C (a huge integer power, say). So every check runs in a
worker process's main thread, and the parent kills a worker whose check outlives the deadline
and starts a fresh one. A check that times out or raises counts as "not equivalent"; garbage
text never takes the run down.

:class:`EquivalencePool` is the only entry point::

    with EquivalencePool(workers=2, timeout=5.0) as pool:
        results = pool.check([("72", "72.0"), ("\\frac{1}{2}", "0.5")])
        # -> [Check(equal=True, status="ok"), Check(equal=True, status="ok")]
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

#: Outcome of one check: ``ok`` (answered in time), ``timeout`` (killed or math-verify gave up),
#: ``error`` (the check raised or the worker died).
STATUSES = ("ok", "timeout", "error")


@dataclass(frozen=True)
class Check:
    """The result of comparing a gold answer with a predicted one."""

    equal: bool
    status: str = "ok"


def normalize_text(answer: str) -> str:
    """Whitespace-trimmed answer without surrounding ``$`` and a trailing period (string fast path)."""
    text = answer.strip().strip("$").strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def _as_latex(answer: str) -> str:
    """Wrap a bare extracted answer in ``$...$`` so math-verify reads it as LaTeX."""
    text = answer.strip()
    return text if "$" in text or "\\boxed" in text else f"${text}$"


def compare(gold: str, pred: str, timeout: float) -> Check:
    """Compare in this process: equal strings, else ``verify(parse(gold), parse(pred))`` (that order).

    Must run in a main thread (math-verify uses ``SIGALRM``); ``timeout`` in seconds bounds
    math-verify's own parse and verify steps (rounded to whole seconds, at least 1).
    """
    if normalize_text(gold) == normalize_text(pred):
        return Check(True)
    from math_verify import parse, verify

    seconds = max(1, int(timeout))
    start = time.perf_counter()
    try:
        gold_parsed = parse(_as_latex(gold), parsing_timeout=seconds)
        pred_parsed = parse(_as_latex(pred), parsing_timeout=seconds)
        equal = bool(verify(gold_parsed, pred_parsed, timeout_seconds=seconds))
    except Exception:
        return Check(False, "error")
    if not equal and time.perf_counter() - start >= seconds:
        return Check(False, "timeout")
    return Check(equal)


def _worker(conn: Connection, timeout: float) -> None:
    """Worker loop: receive ``(task_id, gold, pred)``, send ``(task_id, equal, status)``; ``None`` stops.

    Ctrl-C in a terminal interrupts every process of the foreground group; a worker ignores it and
    lets the parent, which stops on it, shut the pool down (no worker tracebacks).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        task_id, gold, pred = task
        result = compare(gold, pred, timeout)
        conn.send((task_id, result.equal, result.status))


class _Slot:
    """One worker process, its pipe, and the task it is running."""

    def __init__(self, ctx: Any, timeout: float):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, timeout), daemon=True)
        self.process.start()
        child.close()
        self.task: int | None = None
        self.started = 0.0

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class EquivalencePool:
    """A pool of grading processes with a per-check deadline (seconds); hung workers are replaced.

    Workers are started with the ``forkserver`` method (math-verify preloaded), so replacing
    a killed worker costs milliseconds and no CUDA or thread state is inherited from the parent.
    """

    def __init__(self, workers: int = 2, timeout: float = 5.0):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.timeout = float(timeout)
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._ctx = mp.get_context(method)
        if method == "forkserver":
            # ignore_sigint first: a Ctrl-C during the slow imports after it cannot kill the server
            self._ctx.set_forkserver_preload(["thinkfast.evaluate.ignore_sigint", "math_verify",
                                              "thinkfast.evaluate.equivalence"])
        self._slots: list[_Slot] = []
        self.killed = 0  # workers killed for overrunning the deadline (or dying)

    def __enter__(self) -> EquivalencePool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(wait=exc_type is None)  # interrupted or failed: kill the workers without waiting

    def _ensure_started(self) -> None:
        while len(self._slots) < self.workers:
            self._slots.append(_Slot(self._ctx, self.timeout))

    def check(self, pairs: list[tuple[str, str]],
              on_result: Callable[[int, Check], None] | None = None) -> list[Check]:
        """Compare every ``(gold, pred)`` pair; results in input order. Never raises for bad text.

        ``on_result(index, check)`` is called as each pair's result arrives (progress display).
        """
        results: list[Check | None] = [None] * len(pairs)

        def record(task: int, check: Check) -> None:
            results[task] = check
            if on_result is not None:
                on_result(task, check)

        if not pairs:
            return []
        self._ensure_started()
        queue = deque(range(len(pairs)))
        busy: dict[Connection, _Slot] = {}

        def dispatch(slot: _Slot) -> None:
            task = queue.popleft()
            slot.task, slot.started = task, time.monotonic()
            try:
                slot.conn.send((task, *pairs[task]))
            except OSError:  # the worker died (at start-up, say): its pipe reads as closed, and the loop
                pass  # below records the task as "error" and starts a new worker
            busy[slot.conn] = slot

        def replace(slot: _Slot, status: str) -> None:
            busy.pop(slot.conn, None)
            record(slot.task, Check(False, status))
            slot.kill()
            self.killed += 1
            self._slots[self._slots.index(slot)] = fresh = _Slot(self._ctx, self.timeout)
            if queue:
                dispatch(fresh)

        for slot in self._slots:
            if queue:
                dispatch(slot)
        while busy:
            now = time.monotonic()
            deadline = min(s.started for s in busy.values()) + self.timeout
            ready = wait(list(busy), timeout=max(0.0, deadline - now))
            for conn in ready:
                slot = busy[conn]
                try:
                    task, equal, status = conn.recv()
                except (EOFError, OSError):
                    replace(slot, "error")
                    continue
                record(task, Check(equal, status))
                del busy[conn]
                if queue:
                    dispatch(slot)
            now = time.monotonic()
            for slot in [s for s in busy.values() if now - s.started >= self.timeout]:
                replace(slot, "timeout")
        return [r if r is not None else Check(False, "error") for r in results]

    def close(self, wait: bool = True) -> None:
        """Stop every worker: ask each to finish its check and exit (``wait``), else kill it at once."""
        for slot in self._slots:
            if wait:
                try:
                    slot.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
                slot.process.join(timeout=1.0)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
            slot.conn.close()
        self._slots = []
