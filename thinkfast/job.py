"""This process's place in a ``torchrun`` job, as the launcher's environment variables give it.

``torchrun --nproc-per-node N`` starts N processes with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set;
a process started any other way is rank 0 of 1. ``generate`` and ``distill`` shard their work by it and the
CLI decides by it which rank reports an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistEnv:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :class:`ValueError` if one is not an integer."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0
