"""``sdpa``: attention through ``torch.nn.functional.scaled_dot_product_attention`` (any device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from thinkfast.kernels import KernelSet
from thinkfast.kernels.reference import write_kv


class SdpaKernels(KernelSet):
    """Attention prefill (causal, block-diagonal with ``seq_idx``) and decode over a static KV cache, GQA native."""

    name = "sdpa"
    operations = ("attention",)

    @classmethod
    def priority(cls, operation: str, device: torch.device) -> int:
        return 10

    def attention_prefill(self, q, k, v, *, scale, seq_idx=None):
        """``q`` ``(B, L, H, Dh)``, ``k``/``v`` ``(B, L, Hkv, Dh)`` -> ``(B, L, H, Dh)``."""
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if seq_idx is None:
            out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale, enable_gqa=True)
        else:
            length = q.shape[1]
            causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
            mask = (causal & (seq_idx[:, :, None] == seq_idx[:, None, :]))[:, None]  # (B, 1, L, L)
            out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale, enable_gqa=True)
        return out.transpose(1, 2)

    def attention_decode(self, q, k, v, k_cache, v_cache, positions, *, scale):
        """``q`` ``(B, H, Dh)``; writes ``k``/``v`` ``(B, Hkv, Dh)`` at ``positions`` and attends to ``:pos+1``."""
        write_kv(k_cache, v_cache, k, v, positions)
        valid = torch.arange(k_cache.shape[1], device=q.device)[None, :] <= positions[:, None]  # (B, S)
        out = F.scaled_dot_product_attention(
            q[:, :, None], k_cache.transpose(1, 2), v_cache.transpose(1, 2), attn_mask=valid[:, None, None, :],
            scale=scale, enable_gqa=True)
        return out[:, :, 0]
