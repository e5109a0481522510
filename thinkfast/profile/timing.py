"""Timing device work: warm-up, device events on CUDA, ``perf_counter`` elsewhere, median of repeats.

Every function returns seconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn`` takes on ``device``: CUDA events around it on the current stream, else wall time."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def median_time(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    return statistics.median(time_once(fn, device) for _ in range(repeats))


def measure_bandwidth(device: torch.device, nbytes: int | None = None, repeats: int = 5) -> float:
    """Memory bandwidth of ``device`` in bytes/s from a large copy (each byte read once and written once).

    ``nbytes`` defaults to 1 GiB on CUDA (less if the device is nearly full) and 64 MiB on the CPU.
    """
    if nbytes is None:
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            nbytes = min(2**30, free // 4)
        else:
            nbytes = 64 * 2**20
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), device, warmup=2, repeats=repeats)
    return 2 * nbytes / seconds
