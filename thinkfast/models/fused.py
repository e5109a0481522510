"""Inference-time fused projections: several ``nn.Linear`` that read the same input, as one GEMM.

A decode step at batch 64 is a chain of skinny GEMMs whose cost is reading the weights. Small ones run
far below the memory bandwidth (Llama's 2048 x 512 key and value projections take about as long as the
2048 x 2048 query projection; ``docs/performance.md``), and an output whose width is not a multiple of 8
columns sends cuBLAS to a slow kernel (a Mamba in-projection of 2313 columns). :class:`FusedLinear`
concatenates the weights into one matrix, zero-padded to a multiple of ``multiple`` rows, and rebinds
each linear's ``weight`` / ``bias`` to a view of it: the parameters keep their names, shapes and
identities (optimizers and ``state_dict`` see them as before), nothing is stored twice, and an in-place
update of a parameter is an update of the fused matrix.

Where it is used, and what it does not see:

- only by the mixers' inference paths (``prefill`` and ``step``, which the generate engine and the
  profiler drive), with gradients off: the fused product has no autograd link to the parameters, and
  ``forward`` (training, scoring, ``torch.func.functional_call``) always runs the linears themselves;
- it calls ``F.linear`` on the fused matrix, so forward hooks on the fused linears do not fire there,
  and linears that are not plain ``nn.Linear`` or are parametrized are never fused (:func:`fusable`);
- a parameter given new storage (``.to()``, ``load_state_dict(assign=True)``, a new ``Parameter``)
  leaves the fused matrix behind: :meth:`FusedLinear.is_current` says so, and
  :class:`~thinkfast.models.model.ThinkfastLM` checks and re-fuses after its own ``.to()`` and
  ``load_state_dict`` and whenever :meth:`~thinkfast.models.model.ThinkfastLM.fuse_projections` is
  called (the engine calls it when it is built). Copies (``copy.deepcopy``, pickling) come unfused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize


def fusable(linears: Sequence[nn.Module]) -> bool:
    """Whether ``linears`` can share one GEMM: plain, unparametrized ``nn.Linear`` with the same input size,
    dtype and device, all with a bias or all without."""
    if not all(type(lin) is nn.Linear and not parametrize.is_parametrized(lin) for lin in linears):
        return False
    first = linears[0].weight
    same = all(lin.in_features == linears[0].in_features and lin.weight.dtype == first.dtype
               and lin.weight.device == first.device for lin in linears)
    has_bias = {lin.bias is not None for lin in linears}
    return same and len(has_bias) == 1


class FusedLinear:
    """``linears[i](x)`` for every ``i`` from one ``F.linear``; call it with ``x`` ``(..., in)`` to get the
    outputs ``(..., linears[i].out_features)`` in order (views of one ``(..., padded)`` product)."""

    def __init__(self, linears: Sequence[nn.Linear], multiple: int = 1):
        if not fusable(linears):
            raise ValueError("fused linears must be plain nn.Linear sharing their input size, dtype and device, "
                             "all with a bias or all without")
        self.linears = tuple(linears)
        self.multiple = max(multiple, 1)
        self.sizes = [lin.out_features for lin in linears]
        rows = sum(self.sizes)
        first = linears[0].weight
        # outside inference mode, so that the parameters rebound to it stay ordinary (trainable) tensors
        with torch.inference_mode(False), torch.no_grad():
            self.weight = first.new_zeros(rows + (-rows % self.multiple), first.shape[1])  # (padded, in)
            self.bias = first.new_zeros(self.weight.shape[0]) if linears[0].bias is not None else None
            start = 0
            for lin, size in zip(linears, self.sizes, strict=True):
                self.weight[start:start + size].copy_(lin.weight)
                lin.weight.data = self.weight[start:start + size]
                if self.bias is not None:
                    self.bias[start:start + size].copy_(lin.bias)
                    lin.bias.data = self.bias[start:start + size]
                start += size

    def is_current(self) -> bool:
        """Whether every fused linear's parameters still live in the fused matrix (host-side check)."""
        start = 0
        for lin, size in zip(self.linears, self.sizes, strict=True):
            pairs = [(lin.weight, self.weight, start * self.weight.shape[1])]
            if self.bias is not None:
                pairs.append((lin.bias, self.bias, start))
            for param, fused, offset in pairs:
                if (param is None or param.dtype != fused.dtype or param.device != fused.device
                        or param.data_ptr() != fused.data_ptr() + offset * fused.element_size()):
                    return False
            start += size
        return True

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = F.linear(x, self.weight, self.bias)  # (..., padded)
        return list(torch.split(out[..., :sum(self.sizes)], self.sizes, dim=-1))

    def __deepcopy__(self, memo) -> None:
        return None  # a copied model's parameters are separate tensors: the copy is unfused

    def __reduce__(self):
        return (type(None), ())  # likewise for pickling


def refuse(current: FusedLinear | None, linears: Sequence[nn.Module], multiple: int) -> FusedLinear | None:
    """The :class:`FusedLinear` for ``linears`` at ``multiple``: ``current`` when it is still current and
    fused at that multiple, a new one otherwise, ``None`` when they cannot be fused (:func:`fusable`)."""
    if current is not None and current.multiple == max(multiple, 1) and current.linears == tuple(linears) \
            and current.is_current():
        return current
    return FusedLinear(linears, multiple) if fusable(linears) else None
