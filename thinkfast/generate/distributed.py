"""Sharding problems across ``torchrun`` ranks and merging what the ranks measured.

``torchrun --nproc-per-node N -m thinkfast generate ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set. Rank ``r`` takes problems ``r, r + N, r + 2N, ...``,
runs on ``cuda:LOCAL_RANK`` (when the run's device is a GPU), appends its samples to its own
shard file, and writes its timings to ``run.rank<r>.json``. After a barrier (gloo process
group, so it works on CPU too) rank 0 merges everything into ``samples.jsonl`` and ``run.json``.
Every rank starts its run clock from the generation time rank 0 found on record
(:meth:`ProcessGroup.from_main`), read before any rank writes a sample, so the samples' totals of one
invocation share one origin and the slowest rank's last one is the run's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from thinkfast.job import DistEnv

T = TypeVar("T")


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Items ``rank, rank + world_size, ...``: every item lands on exactly one rank, loads stay balanced."""
    return list(items[rank::world_size])


def rank_stats_name(rank: int) -> str:
    return f"run.rank{rank}.json"


def merge_rank_stats(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-rank timings: ranks run in parallel, so wall time is the slowest rank's and
    throughput is all generated tokens over that wall time. Whether the decode step ran as a CUDA graph and
    compiled is said by the ranks that ran the engine: a rank with nothing to generate (more ranks than
    problems, or its share already done on a resume) ran none and has no say (false if no rank ran it)."""
    wall = max((float(s["wall_seconds"]) for s in stats), default=0.0)
    tokens = sum(int(s["generated_tokens"]) for s in stats)
    engines = [s for s in stats if "cuda_graph" in s]
    return {
        "wall_seconds": wall,
        "generated_tokens": tokens,
        "new_samples": sum(int(s["new_samples"]) for s in stats),
        "tokens_per_second": tokens / wall if wall > 0 else 0.0,
        "devices": [s["device"] for s in sorted(stats, key=lambda s: s["rank"])],
        "cuda_graph": bool(engines) and all(s["cuda_graph"] for s in engines),
        "graph_error": next((s["graph_error"] for s in stats if s.get("graph_error")), None),
        "compiled": bool(engines) and all(s.get("compiled", False) for s in engines),
        "compile_seconds": max((float(s.get("compile_seconds", 0.0)) for s in stats), default=0.0),
        "compile_error": next((s["compile_error"] for s in stats if s.get("compile_error")), None),
        "prefill_compile_errors": {k: v for s in stats for k, v in (s.get("prefill_compile_errors") or {}).items()},
        "engine": sum_engine_stats([s.get("engine") or {} for s in stats]),
        # the model's student kind, from any rank that loaded it (a rank with nothing to do loads none)
        "student": next((s["student"] for s in stats if s.get("student") is not None), None),
    }


def sum_engine_stats(stats: Sequence[dict[str, float]]) -> dict[str, float]:
    """Every rank's engine counters and seconds, summed key by key (seconds are device-seconds of all ranks)."""
    total: dict[str, float] = {}
    for rank_stats in stats:
        for key, value in rank_stats.items():
            total[key] = total.get(key, 0) + value
    return total


def read_rank_stats(out_dir: Path, world_size: int) -> list[dict[str, Any]]:
    """Every rank's ``run.rank<r>.json``, removed once read; those of ranks an interrupted earlier run had
    beyond ``world_size`` (a rank that finished first wrote its file) are removed unread."""
    stats = []
    for rank in range(world_size):
        path = out_dir / rank_stats_name(rank)
        stats.append(json.loads(path.read_text()))
        path.unlink()
    for stale in out_dir.glob("run.rank*.json"):
        stale.unlink(missing_ok=True)
    return stats


class ProcessGroup:
    """A gloo process group for barriers and for sharing rank 0's values; a no-op outside torchrun."""

    def __init__(self, env: DistEnv, timeout_s: float = 24 * 3600):
        self.env = env
        self._owned = False
        if env.distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
                self._owned = True

    def from_main(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (a collective call: every rank makes it); ``value`` outside torchrun."""
        if not self.env.distributed:
            return value
        import torch.distributed as dist

        shared = [value]
        dist.broadcast_object_list(shared, src=0)
        return shared[0]

    def barrier(self) -> None:
        if self.env.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self._owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owned = False
