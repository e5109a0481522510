"""Causal self-attention mixer (Llama: RoPE incl. Llama-3 scaling, GQA, static KV cache)."""

from __future__ import annotations

import torch
import torch.nn as nn

from thinkfast.errors import ThinkfastError
from thinkfast.kernels import Kernels
from thinkfast.kernels.reference import attention_probs
from thinkfast.models import pointwise
from thinkfast.models.cache import AttentionCache, write_slots
from thinkfast.models.config import ModelConfig
from thinkfast.models.fused import FusedLinear, refuse
from thinkfast.models.layers import RotaryEmbedding


class Attention(nn.Module):
    """Multi-head attention with ``num_kv_heads`` key/value heads; takes the *normed* block input."""

    def __init__(self, config: ModelConfig, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype, "bias": config.attention_bias}
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, **kw)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, **kw)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, **kw)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, **kw)
        self.rotary = RotaryEmbedding(self.head_dim, config.rope_theta, config.rope_scaling, device=device)
        self.kernels = Kernels.reference()
        self.fused_qkv: FusedLinear | None = None  # see fuse_projections

    def fuse_projections(self, multiple: int) -> None:
        """``prefill`` and ``step`` compute ``q``, ``k`` and ``v`` as one GEMM (with gradients off;
        :mod:`thinkfast.models.fused`); a fusion still current at ``multiple`` is kept."""
        self.fused_qkv = refuse(self.fused_qkv, [self.q_proj, self.k_proj, self.v_proj], multiple)

    def unfuse_projections(self) -> None:
        self.fused_qkv = None

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor,
             fused: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` ``(..., L, D)`` -> rotated ``q`` ``(..., L, H, Dh)``, ``k`` and ``v`` ``(..., L, Hkv, Dh)``;
        ``fused`` (the inference paths): through :attr:`fused_qkv` when there is one and gradients are off."""
        shape = x.shape[:-1]
        if fused and self.fused_qkv is not None and not torch.is_grad_enabled():
            q, k, v = self.fused_qkv(x)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(*shape, self.num_heads, self.head_dim)
        k = k.view(*shape, self.num_kv_heads, self.head_dim)
        v = v.view(*shape, self.num_kv_heads, self.head_dim)
        cos, sin = self.rotary.tables(positions, q.dtype)
        return pointwise.apply_rotary(q, cos, sin), pointwise.apply_rotary(k, cos, sin), v

    @staticmethod
    def _positions(x: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
        """``position_ids`` ``(B, L)``, or ``0 .. L - 1`` for every row: always ``(B, L)``, so that the rotary
        tables have one shape whether prompts are left-padded or not (one compiled kernel serves both)."""
        if position_ids is not None:
            return position_ids
        return torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)

    def forward(self, x: torch.Tensor, seq_idx: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, L, D)``, ``seq_idx`` ``(B, L)`` segment index, ``position_ids`` ``(B, L)`` -> ``(B, L, D)``."""
        q, k, v = self._qkv(x, self._positions(x, position_ids))
        out = self.kernels.attention.attention_prefill(q, k, v, scale=self.scale, seq_idx=seq_idx)
        return self.o_proj(out.flatten(-2))

    def attention_matrix(self, x: torch.Tensor, seq_idx: torch.Tensor | None = None,
                         position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Causal softmax probabilities ``(B, H, L, L)`` float32 for the normed input ``x`` ``(B, L, D)``."""
        q, k, _ = self._qkv(x, self._positions(x, position_ids))
        return attention_probs(q, k, scale=self.scale, seq_idx=seq_idx)

    def allocate_cache(self, batch_size: int, max_seqlen: int, *, dtype: torch.dtype,
                       state_dtype: torch.dtype, device: torch.device) -> AttentionCache:
        shape = (batch_size, max_seqlen, self.num_kv_heads, self.head_dim)
        return AttentionCache(k=torch.zeros(shape, dtype=dtype, device=device),
                              v=torch.zeros(shape, dtype=dtype, device=device))

    def prefill(self, x: torch.Tensor, cache: AttentionCache, slots: torch.Tensor, rows: torch.Tensor | None = None,
                seq_idx: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Prompts ``x`` ``(P, L, D)`` -> output ``(P, L, D)``; prompt ``rows[i]``'s keys/values go to
        ``cache[slots[i], :L]`` (``slots``, ``rows``: ``(S,)`` long; ``rows=None``: ``P == 1``, every slot).

        Left-padded prompts come with ``seq_idx`` ``(P, L)`` (padding and prompt are separate segments)
        and document-relative ``position_ids`` ``(P, L)``; each prompt's keys/values are then shifted to
        start at cache position 0 (positions past its length hold copies that decoding overwrites).
        """
        length = x.shape[1]
        if length > cache.k.shape[1]:
            raise ThinkfastError(f"a prompt of {length} tokens does not fit a cache of {cache.k.shape[1]} "
                                 f"positions; raise the maximum sequence length")
        q, k, v = self._qkv(x, self._positions(x, position_ids), fused=True)
        if position_ids is not None:  # left padding: prompt p starts at L - 1 - position_ids[p, -1]
            start = length - 1 - position_ids[:, -1]  # (P,)
            src = (torch.arange(length, device=x.device) + start[:, None]).clamp(max=length - 1)  # (P, L)
            src = src[:, :, None, None].expand_as(k)
            write_slots(cache.k, slots, k.gather(1, src), rows)
            write_slots(cache.v, slots, v.gather(1, src), rows)
        else:
            write_slots(cache.k, slots, k, rows)
            write_slots(cache.v, slots, v, rows)
        out = self.kernels.attention.attention_prefill(q, k, v, scale=self.scale, seq_idx=seq_idx)
        return self.o_proj(out.flatten(-2))

    def step(self, x: torch.Tensor, positions: torch.Tensor, cache: AttentionCache) -> torch.Tensor:
        """One token per slot: ``x`` ``(B, D)`` at ``positions`` ``(B,)`` -> ``(B, D)``; writes the KV cache."""
        q, k, v = self._qkv(x[:, None], positions[:, None], fused=True)
        out = self.kernels.attention.attention_decode(
            q[:, 0], k[:, 0], v[:, 0], cache.k, cache.v, positions, scale=self.scale)
        return self.o_proj(out.flatten(-2))
