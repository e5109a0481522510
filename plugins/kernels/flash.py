"""``flash-attn``: FlashAttention-2 prefill (dense or varlen for packed documents) and KV-cache decode (lazy)."""

from __future__ import annotations

import torch
from thinkfast_plugins.kernels.sdpa import SdpaKernels

from thinkfast.kernels import KernelSet
from thinkfast.kernels.base import cuda_module_unavailable

FLASH_DTYPES = (torch.float16, torch.bfloat16)


def cu_seqlens_from_segments(seq_idx: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Segment index ``(B, L)`` -> cumulative document lengths ``(n_docs + 1,)`` int32 over the flattened
    batch and the longest document (one host synchronisation)."""
    batch, length = seq_idx.shape
    starts = torch.ones_like(seq_idx, dtype=torch.bool)
    starts[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    idx = torch.nonzero(starts.flatten()).flatten()
    cu = torch.cat([idx, torch.tensor([batch * length], device=idx.device)]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max().item())


class FlashAttnKernels(KernelSet):
    """Attention with flash_attn (CUDA, fp16/bf16; other dtypes go through ``sdpa``)."""

    name = "flash-attn"
    operations = ("attention",)

    @classmethod
    def availability(cls, device: torch.device, operation: str | None = None) -> str | None:
        return cuda_module_unavailable(device, "flash_attn")

    @classmethod
    def priority(cls, operation: str, device: torch.device) -> int:
        return 20

    def attention_prefill(self, q, k, v, *, scale, seq_idx=None):
        if q.dtype not in FLASH_DTYPES:
            return SdpaKernels().attention_prefill(q, k, v, scale=scale, seq_idx=seq_idx)
        from flash_attn import flash_attn_func, flash_attn_varlen_func

        if seq_idx is None:
            return flash_attn_func(q, k, v, softmax_scale=scale, causal=True)
        cu, longest = cu_seqlens_from_segments(seq_idx)
        out = flash_attn_varlen_func(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu, cu, longest, longest,
                                     softmax_scale=scale, causal=True)
        return out.view_as(q)

    def attention_decode(self, q, k, v, k_cache, v_cache, positions, *, scale):
        if q.dtype not in FLASH_DTYPES:
            return SdpaKernels().attention_decode(q, k, v, k_cache, v_cache, positions, scale=scale)
        from flash_attn import flash_attn_with_kvcache

        out = flash_attn_with_kvcache(q[:, None], k_cache, v_cache, k=k[:, None], v=v[:, None],
                                      cache_seqlens=positions.to(torch.int32), softmax_scale=scale, causal=True)
        return out[:, 0]
