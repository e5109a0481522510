"""The kernel interface: what a kernel plugin provides and how a model calls it.

A kernel plugin registers a :class:`KernelSet` subclass (family ``kernels``). It provides one or
more *operations*:

- ``ssm``: :meth:`KernelSet.ssd_chunk_scan` and :meth:`KernelSet.ssd_step`
- ``conv``: :meth:`KernelSet.causal_conv1d` and :meth:`KernelSet.causal_conv1d_step`
- ``attention``: :meth:`KernelSet.attention_prefill` and :meth:`KernelSet.attention_decode`

Argument shapes and semantics are those of the reference implementations in
:mod:`thinkfast.kernels.reference` (which :class:`TorchKernels` wraps); every plugin must agree
with them within the tolerance of its dtype. A model holds one :class:`Kernels` (a kernel set per
operation) and calls ``kernels.ssm.ssd_chunk_scan(...)`` and so on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from thinkfast.kernels import reference

OPERATIONS = ("ssm", "conv", "attention")


def cuda_module_unavailable(device: torch.device, *modules: str) -> str | None:
    """Why a kernel set that needs CUDA and ``modules`` cannot run on ``device`` (None if it can).

    Never raises: an import that fails for any reason (missing package, CUDA or ABI mismatch) is the reason.
    """
    if device.type != "cuda":
        return "it needs a CUDA device"
    for module in modules:
        try:
            __import__(module)
        except Exception as exc:
            return f"{module} cannot be imported ({type(exc).__name__}: {exc}); install thinkfast[cuda]"
    return None


class KernelSet:
    """Base class of kernel plugins. Subclasses override the methods of the operations they list.

    Class attributes:
        name: the registered name (``torch``, ``sdpa``...).
        operations: the operations this set implements (a subset of :data:`OPERATIONS`).
    """

    name: ClassVar[str] = ""
    operations: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def availability(cls, device: torch.device, operation: str | None = None) -> str | None:
        """``None`` if ``operation`` (or every operation of the set) can run on ``device``, else a sentence
        saying why not. Must never raise (it runs on machines without CUDA or the optional packages)."""
        return None

    @classmethod
    def priority(cls, operation: str, device: torch.device) -> int:
        """Rank used by ``auto`` selection (higher wins) among sets available on ``device``."""
        return 0

    # --- ssm -------------------------------------------------------------------------------
    def ssd_chunk_scan(self, x, dt, A, B, C, *, chunk_size: int, D=None, dt_bias=None, initial_state=None,
                       seq_idx=None) -> tuple[torch.Tensor, torch.Tensor]:
        """See :func:`thinkfast.kernels.reference.ssd_chunk_scan`: returns ``(y, final_state)``."""
        raise NotImplementedError

    def ssd_step(self, state, x, dt, A, B, C, *, D=None, dt_bias=None) -> torch.Tensor:
        """See :func:`thinkfast.kernels.reference.ssd_step`: updates ``state`` in place, returns ``y``."""
        raise NotImplementedError

    # --- conv ------------------------------------------------------------------------------
    def causal_conv1d(self, x, weight, bias=None, *, activation=None, initial_state=None, seq_idx=None,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """See :func:`thinkfast.kernels.reference.causal_conv1d`: returns ``(y, final_state)``.

        ``final_state`` may be ``None`` when ``seq_idx`` is given (packed training never needs it).
        """
        raise NotImplementedError

    def causal_conv1d_step(self, x, conv_state, weight, bias=None, *, activation=None) -> torch.Tensor:
        """See :func:`thinkfast.kernels.reference.causal_conv1d_step`."""
        raise NotImplementedError

    # --- attention -------------------------------------------------------------------------
    def attention_prefill(self, q, k, v, *, scale: float, seq_idx=None) -> torch.Tensor:
        """See :func:`thinkfast.kernels.reference.attention_prefill`."""
        raise NotImplementedError

    def attention_decode(self, q, k, v, k_cache, v_cache, positions, *, scale: float) -> torch.Tensor:
        """See :func:`thinkfast.kernels.reference.attention_decode` (writes ``k``, ``v`` into the cache)."""
        raise NotImplementedError


class TorchKernels(KernelSet):
    """Pure-PyTorch reference kernels: every operation, every device (slow but exact, float32 accumulation)."""

    name = "torch"
    operations = OPERATIONS

    def ssd_chunk_scan(self, x, dt, A, B, C, *, chunk_size, D=None, dt_bias=None, initial_state=None,
                       seq_idx=None):
        return reference.ssd_chunk_scan(x, dt, A, B, C, chunk_size=chunk_size, D=D, dt_bias=dt_bias,
                                        initial_state=initial_state, seq_idx=seq_idx)

    def ssd_step(self, state, x, dt, A, B, C, *, D=None, dt_bias=None):
        return reference.ssd_step(state, x, dt, A, B, C, D=D, dt_bias=dt_bias)

    def causal_conv1d(self, x, weight, bias=None, *, activation=None, initial_state=None, seq_idx=None):
        return reference.causal_conv1d(x, weight, bias, activation=activation, initial_state=initial_state,
                                       seq_idx=seq_idx)

    def causal_conv1d_step(self, x, conv_state, weight, bias=None, *, activation=None):
        return reference.causal_conv1d_step(x, conv_state, weight, bias, activation=activation)

    def attention_prefill(self, q, k, v, *, scale, seq_idx=None):
        return reference.attention_prefill(q, k, v, scale=scale, seq_idx=seq_idx)

    def attention_decode(self, q, k, v, k_cache, v_cache, positions, *, scale):
        return reference.attention_decode(q, k, v, k_cache, v_cache, positions, scale=scale)


@dataclass(frozen=True)
class Kernels:
    """The kernel set chosen for each operation of a model."""

    ssm: KernelSet
    conv: KernelSet
    attention: KernelSet

    @classmethod
    def reference(cls) -> Kernels:
        """Pure-PyTorch kernels for everything (the default of a freshly built model)."""
        ref = TorchKernels()
        return cls(ssm=ref, conv=ref, attention=ref)

    def names(self) -> dict[str, str]:
        """``{"ssm": "torch", ...}``: which plugin runs each operation."""
        return {op: getattr(self, op).name for op in OPERATIONS}
