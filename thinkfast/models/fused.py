"""Inference-time fused projections: several ``nn.Linear`` that read the same input, as one GEMM.

A decode step at batch 64 is a chain of skinny GEMMs whose cost is reading the weights. Small ones run
far below the memory bandwidth (Llama's 2048 x 512 key and value projections take about as long as the
2048 x 2048 query projection; ``docs/performance.md``), and an output whose width is not a multiple of 8
columns sends cuBLAS to a slow kernel (a Mamba in-projection of 2313 columns). :class:`FusedLinear`
concatenates the weights into one matrix, zero-padded to a multiple of ``multiple`` rows, and rebinds
each linear's ``weight`` / ``bias`` to a view of it: the parameters keep their names, shapes and
identities (optimizers and ``state_dict`` see them as before), nothing is stored twice, and an in-place
update of a parameter is an update of the fused matrix.

Anything that replaces a parameter's storage (``.to()``, ``load_state_dict(assign=True)``) must drop
the fusion first; :class:`~thinkfast.models.model.ThinkfastLM` does that for its own calls. The fused
product has no autograd link to the parameters, so mixers use it only with gradients disabled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class FusedLinear:
    """``linears[i](x)`` for every ``i`` from one ``F.linear``; call it with ``x`` ``(..., in)`` to get the
    outputs ``(..., linears[i].out_features)`` in order (views of one ``(..., padded)`` product)."""

    def __init__(self, linears: Sequence[nn.Linear], multiple: int = 1):
        first = linears[0].weight
        if any(lin.in_features != linears[0].in_features or lin.weight.dtype != first.dtype
               or lin.weight.device != first.device for lin in linears):
            raise ValueError("fused linears must share their input size, dtype and device")
        has_bias = [lin.bias is not None for lin in linears]
        if any(has_bias) and not all(has_bias):
            raise ValueError("fused linears must all have a bias or all have none")
        self.sizes = [lin.out_features for lin in linears]
        rows = sum(self.sizes)
        padded = rows + (-rows % max(multiple, 1))
        self.weight = first.new_zeros(padded, first.shape[1])  # (padded, in)
        self.bias = first.new_zeros(padded) if all(has_bias) else None  # (padded,) | None
        start = 0
        with torch.no_grad():
            for lin, size in zip(linears, self.sizes, strict=True):
                self.weight[start:start + size].copy_(lin.weight)
                lin.weight.data = self.weight[start:start + size]
                if self.bias is not None:
                    self.bias[start:start + size].copy_(lin.bias)
                    lin.bias.data = self.bias[start:start + size]
                start += size

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = F.linear(x, self.weight, self.bias)  # (..., padded)
        return list(torch.split(out[..., :sum(self.sizes)], self.sizes, dim=-1))
