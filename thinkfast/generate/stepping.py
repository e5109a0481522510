"""Making a decode step fast: compile it with ``torch.compile`` and capture it in a CUDA graph.

A *step* here is a function of no arguments that reads and updates fixed device buffers in place (the
engine's ``_decode_step``, the profiler's model step). Both helpers degrade instead of failing: a step
that cannot be compiled or captured runs as it is, and the reason is returned for the run's record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from thinkfast.compile_limits import raise_recompile_limits

Step = Callable[[], object]


def compile_step(step: Step, mode: str | None = None) -> Step:
    """``torch.compile`` ``step`` with fixed shapes (``dynamic=False``) and no compiler CUDA graphs (the
    callers capture their own), so inductor fuses the norms, activations, sampling and bookkeeping
    around the GEMMs and kernel-plugin calls into few kernels.

    Each engine or profile cell compiles its own step (shapes and settings differ), so the recompile
    limit is raised (:func:`~thinkfast.compile_limits.raise_recompile_limits`); past it dynamo raises
    rather than fall back to eager silently, and :func:`compile_and_warm` reports that as a compile error.
    ``mode`` is ``torch.compile``'s (``None``: default; ``"max-autotune-no-cudagraphs"`` also tunes GEMMs,
    slowly).
    """
    raise_recompile_limits()
    return torch.compile(step, dynamic=False, mode=mode)


@dataclass
class CompiledStep:
    """The step to run (compiled, or the original if compiling failed), the seconds the first call took
    (compilation included) and, if compiling failed, why."""

    step: Step
    seconds: float
    error: str | None = None


def compile_and_warm(step: Step, device: torch.device, mode: str | None = None) -> CompiledStep:
    """Compile ``step`` and call it once (where the compilation happens); on a compiler failure keep
    ``step`` uncompiled. Out-of-memory errors are not compiler failures: they propagate.

    The call runs the step for real, so its buffers must tolerate one extra step (the engine's idle
    slots, the profiler's scratch cache).
    """
    compiled = compile_step(step, mode)
    start = time.perf_counter()
    try:
        compiled()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: run the step uncompiled
        if "out of memory" in str(exc).lower():
            raise
        text = str(exc).strip()
        reason = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        return CompiledStep(step, time.perf_counter() - start, reason)
    return CompiledStep(compiled, time.perf_counter() - start)


def capture_cuda_graph(step: Step, device: torch.device, warmup: int = 3,
                       ) -> tuple[torch.cuda.CUDAGraph | None, str | None]:
    """Capture ``step`` in a CUDA graph after ``warmup`` calls on a side stream (as graph capture wants).

    Returns ``(graph, None)``, or ``(None, reason)`` when a kernel cannot be captured (one that syncs
    with the host, say): the caller then runs ``step`` eagerly. Out-of-memory errors propagate.
    """
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            step()
    except RuntimeError as exc:
        if "out of memory" in str(exc):
            raise
        torch.cuda.synchronize(device)
        return None, f"{type(exc).__name__}: {exc}"
    return graph, None
