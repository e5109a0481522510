"""Which process of a ``torchrun`` job tells the user about an error.

Under ``torchrun --nproc-per-node N`` every rank reads the same recipe, data and model, so a bad recipe key or
a missing file fails on all N ranks alike. Rank 0 prints the message; any other rank first waits
:data:`RANK_ZERO_GRACE_S` seconds, in which the launcher stops it once rank 0 has exited with the error (torchrun
stops the other workers as soon as one fails). An error only that rank hit (rank 0 carries on) is then printed
by the rank itself, prefixed ``rank R:``, so no message is lost; outside a multi-process job nothing changes.
A crash (thinkfast's own bug) is reported once per job by :mod:`thinkfast.cli.crash`.
"""

from __future__ import annotations

import time

from thinkfast.job import DistEnv

#: Seconds a rank other than 0 gives rank 0 to report the same error (and the launcher to stop this rank).
RANK_ZERO_GRACE_S = 10.0


def _job() -> DistEnv:
    """This process's place in the job as :class:`~thinkfast.job.DistEnv` reads it; rank 0 of 1
    when the variables are not numbers (reporting an error must not fail on them)."""
    try:
        return DistEnv.from_env()
    except ValueError:
        return DistEnv()


def in_multi_rank_job() -> bool:
    """Whether this process is one of several (``WORLD_SIZE`` > 1, as ``torchrun`` sets it)."""
    return _job().distributed


def job_rank() -> int:
    """This process's rank in a multi-process job (``RANK`` when ``WORLD_SIZE`` > 1), else 0."""
    job = _job()
    return job.rank if job.distributed else 0


def defer_to_rank_zero(grace_s: float | None = None) -> str:
    """Before reporting an error: ``""`` on rank 0 (or alone); on another rank, wait for rank 0 to report it and
    return the prefix (``"rank R: "``) for the message this rank prints if it is still running after the wait."""
    rank = job_rank()
    if rank == 0:
        return ""
    time.sleep(RANK_ZERO_GRACE_S if grace_s is None else grace_s)
    return f"rank {rank}: "


def is_main_rank() -> bool:
    """Whether this process reports for the whole job (rank 0, or not under torchrun)."""
    return job_rank() == 0
