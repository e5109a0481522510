"""This process's place in a ``torchrun`` job, as the launcher's environment variables give it.

``torchrun --nproc-per-node N`` starts N processes with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set;
a process started any other way is rank 0 of 1. ``generate`` and ``distill`` shard their work by it and the
CLI decides by it which rank reports an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from thinkfast.errors import ThinkfastError


class JobEnvironmentError(ThinkfastError, ValueError):
    """``RANK``, ``WORLD_SIZE`` or ``LOCAL_RANK`` is set to something other than a whole number."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistEnv:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :class:`JobEnvironmentError` (a ``ValueError``) if one
        is not an integer."""
        return cls(_whole_number("RANK", 0), _whole_number("WORLD_SIZE", 1), _whole_number("LOCAL_RANK", 0))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _whole_number(name: str, default: int) -> int:
    """The environment variable ``name`` as an int (``default`` when unset)."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise JobEnvironmentError(
            f"environment variable {name}={value!r} is not a number; torchrun sets RANK, WORLD_SIZE and LOCAL_RANK "
            f"for each process it starts: unset {name} to run as one process, or start the job with torchrun"
        ) from None
