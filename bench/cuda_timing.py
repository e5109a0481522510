"""Timing device work from a CUDA graph: shared by the benchmark scripts in this folder."""

from __future__ import annotations

import torch

from thinkfast.generate.stepping import capture_cuda_graph


def graph_replay_ms(fn, calls: int = 1, replays: int = 50) -> float:
    """Median milliseconds per call of ``fn``: ``calls`` back-to-back calls captured in one CUDA graph
    (:func:`~thinkfast.generate.stepping.capture_cuda_graph`, warm-up included), the graph replayed
    ``replays`` times, each replay timed with CUDA events."""

    def batch_of_calls() -> None:
        for _ in range(calls):
            fn()

    graph, error = capture_cuda_graph(batch_of_calls, torch.device("cuda", torch.cuda.current_device()))
    if graph is None:
        raise RuntimeError(f"cannot capture the timed function in a CUDA graph: {error}")
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return sorted(times)[len(times) // 2]
