"""Timing device work from a CUDA graph: shared by the benchmark scripts in this folder."""

from __future__ import annotations

import torch


def graph_replay_ms(fn, calls: int = 1, replays: int = 50) -> float:
    """Median milliseconds per call of ``fn``: ``calls`` back-to-back calls captured in one CUDA graph
    (after three warm-up calls on a side stream), the graph replayed ``replays`` times, each replay timed
    with CUDA events."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return sorted(times)[len(times) // 2]
