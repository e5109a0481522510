"""The timed decode step: ``model.step`` for every slot at a chosen position, optionally as a CUDA graph.

The step has fixed shapes and no host synchronisation (docs/architecture.md), so it can be
captured once per cell and replayed; the position is changed in place between replays. The
tokens fed are random: with random weights and a cache of any content the work is the same.
"""

from __future__ import annotations

import torch

from thinkfast.generate.stepping import capture_cuda_graph, compile_and_warm


class DecodeStep:
    """Calling it runs one decode step for ``batch`` slots at the position set by :meth:`at`.

    ``tokens (batch,) int64`` and ``positions (batch,) int64`` are static tensors on the model's
    device; a captured graph reads them in place. With ``compile`` the step goes through
    ``torch.compile`` first (as ``generate`` does); if that fails it runs uncompiled and
    :attr:`compile_error` says why.
    """

    def __init__(self, model, cache, batch: int, vocab_size: int, device: torch.device, cuda_graph: bool,
                 compile: bool = False):
        self.model = model
        self.cache = cache
        self.tokens = torch.randint(0, vocab_size, (batch,), device=device)  # (B,)
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.compile_error: str | None = None
        self.compiled = False  # whether the step runs compiled (asked for, and compilation worked)
        self._step = self._model_step
        if compile:
            compiled = compile_and_warm(self._model_step, device)
            self._step, self.compile_error = compiled.step, compiled.error
            self.compiled = compiled.error is None
        if cuda_graph and device.type == "cuda":
            self.graph, _ = capture_cuda_graph(self._step, device, warmup=2)

    def at(self, position: int) -> DecodeStep:
        """Put every slot at ``position`` (the 0-based index of the token fed); returns self."""
        self.positions.fill_(position)
        return self

    def _model_step(self) -> torch.Tensor:
        return self.model.step(self.tokens, self.positions, self.cache)  # (B, V)

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()


def decode_positions(prompt_len: int, gen_len: int, points: int) -> list[int]:
    """``points`` positions evenly spaced from the first generated token to the last.

    The first token fed to a decode step is the last prompt token's successor, at index
    ``prompt_len``; the last one is at ``prompt_len + gen_len - 1``. One point means the middle.
    """
    first, last = prompt_len, prompt_len + gen_len - 1
    if points == 1 or first == last:
        return [(first + last) // 2]
    n = min(points, last - first + 1)
    return sorted({round(first + i * (last - first) / (n - 1)) for i in range(n)})


def trapezoid_mean(xs: list[int], ys: list[float]) -> float:
    """Mean of a piecewise-linear function through ``(xs, ys)`` over ``[xs[0], xs[-1]]`` (ys[0] if one point)."""
    if len(xs) == 1:
        return ys[0]
    area = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))
    return area / (xs[-1] - xs[0])
