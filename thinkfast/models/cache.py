"""Inference state: one cache object per layer, allocated once for a fixed batch and length."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionCache:
    """Static KV cache of one attention layer: ``k``, ``v``: ``(batch, max_seqlen, num_kv_heads, head_dim)``."""

    k: torch.Tensor
    v: torch.Tensor


@dataclass
class SSMCache:
    """State of one SSM layer.

    ``conv_state``: ``(batch, conv_dim, conv_kernel - 1)`` (last conv inputs, oldest first; stored with the
    channels contiguous, a transposed view) or ``None`` without a conv;
    ``ssm_state``: ``(batch, num_heads, head_dim, state_size)``.
    """

    conv_state: torch.Tensor | None
    ssm_state: torch.Tensor


LayerCache = AttentionCache | SSMCache


def write_slots(dst: torch.Tensor, slots: torch.Tensor, src: torch.Tensor, rows: torch.Tensor | None = None) -> None:
    """Copy per-prompt prefill results into cache slots: ``dst[slots[i], :n] = src[rows[i]]``.

    ``dst``: a cache tensor ``(batch, T, ...)``; ``src``: ``(P, n, ...)`` with ``n <= T`` (one entry per
    prompt: a KV block ``(P, L, nkv, headdim)`` or a final state); ``slots``: ``(S,)`` long;
    ``rows``: ``(S,)`` long, the prompt of each slot, or ``None`` for one prompt (``P == 1``) copied into
    every slot. Casts to ``dst.dtype``.
    """
    value = (src if rows is None else src[rows]).to(dst.dtype)  # (S or 1, n, ...)
    if src.shape[1] == dst.shape[1]:
        dst[slots] = value
    else:
        dst[slots, : src.shape[1]] = value


@dataclass
class InferenceCache:
    """Every layer's cache, for ``batch_size`` slots of up to ``max_seqlen`` tokens."""

    layers: list[LayerCache]
    batch_size: int
    max_seqlen: int

    def nbytes(self) -> int:
        """Total bytes held by the cache tensors."""
        total = 0
        for layer in self.layers:
            for t in vars(layer).values():
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total

    def zero_(self) -> InferenceCache:
        """Clear every tensor in place (keeps storage, so captured graphs stay valid)."""
        for layer in self.layers:
            for t in vars(layer).values():
                if isinstance(t, torch.Tensor):
                    t.zero_()
        return self
