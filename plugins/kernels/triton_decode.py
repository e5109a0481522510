"""``triton``: decode-step kernels written in Triton, for every operation; prefill uses the best other kernels.

- attention: split-K ("flash-decoding") decode over the static KV cache. Decoding attends one query per
  row to up to ``S`` cached keys. A general attention kernel gives that case poor parallelism (one query
  tile per row and head); here each program takes one row, one KV head (all its GQA query heads at
  once) and one slice of the sequence, and a small combine step merges the slices' partial softmaxes.
- ssm and conv: the SSD state update and the conv step of :mod:`thinkfast_plugins.kernels.triton_ssm`.

Prefill (and training) calls go to :class:`SdpaKernels` for attention and to the ``mamba-ssm`` kernels for
the SSD scan and the conv when those import, else to the PyTorch reference. Triton is imported lazily.
"""

from __future__ import annotations

import functools

import torch
from thinkfast_plugins.kernels.lazy_triton import define, lazy_kernel
from thinkfast_plugins.kernels.mamba import MambaSsmKernels
from thinkfast_plugins.kernels.sdpa import SdpaKernels
from thinkfast_plugins.kernels.triton_ssm import (
    conv_kernel,
    ssd_kernel,
    supports_conv_step,
    supports_ssd_step,
    triton_conv_step,
    triton_ssd_step,
)

from thinkfast.kernels import TorchKernels
from thinkfast.kernels.base import KernelSet, cuda_module_unavailable
from thinkfast.kernels.reference import write_kv

BLOCK_S = 64  # keys per inner iteration
MIN_SPLIT = 256  # keys per split at least
TARGET_PROGRAMS = 1024  # enough programs to fill a Hopper GPU's 132 multiprocessors several times
NUM_WARPS = 4  # per program
NUM_STAGES = 3  # software-pipelined key blocks in flight (Triton's default)


def _define_partial_kernel():
    """Compile-on-first-use Triton kernel: one (row, KV head, sequence slice) per program."""
    import triton
    import triton.language as tl

    @triton.jit
    def attention_decode_partial(
        Q, K, V, LENS, OUT, LSE, scale, num_kv_heads,
        sqb, sqh, skb, sks, skh, svb, svs, svh, sob, soh, sos, slb, slh,
        GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr,
        SPLIT_LEN: tl.constexpr,
    ):
        pid = tl.program_id(0)
        split = tl.program_id(1)
        b = pid // num_kv_heads
        kvh = pid % num_kv_heads
        length = tl.load(LENS + b)
        start = split * SPLIT_LEN
        end = tl.minimum(start + SPLIT_LEN, length)
        g = tl.arange(0, BLOCK_G)
        d = tl.arange(0, HEAD_DIM)
        heads = kvh * GROUP + g
        gmask = g < GROUP
        q = tl.load(Q + b * sqb + heads[:, None] * sqh + d[None, :], mask=gmask[:, None], other=0.0)
        m = tl.full([BLOCK_G], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, HEAD_DIM], tl.float32)
        for s0 in range(start, end, BLOCK):
            s = s0 + tl.arange(0, BLOCK)
            smask = s < end
            k = tl.load(K + b * skb + s[:, None] * sks + kvh * skh + d[None, :], mask=smask[:, None], other=0.0)
            # (BLOCK_G, BLOCK) float32; the cast keeps it so when torch.compile passes scale as a double
            scores = (tl.dot(q, tl.trans(k)) * scale).to(tl.float32)
            scores = tl.where(smask[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, 1))
            p = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m - m_new)
            total = total * alpha + tl.sum(p, 1)
            v = tl.load(V + b * svb + s[:, None] * svs + kvh * svh + d[None, :], mask=smask[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        filled = total > 0  # an empty slice (start >= length) contributes nothing
        safe = tl.where(filled, total, 1.0)
        tl.store(OUT + b * sob + heads[:, None] * soh + split * sos + d[None, :], acc / safe[:, None],
                 mask=gmask[:, None])
        tl.store(LSE + b * slb + heads * slh + split, tl.where(filled, m + tl.log(safe), float("-inf")),
                 mask=gmask)

    return attention_decode_partial


def partial_kernel():
    """The split-K attention kernel, defined on first use (see ``lazy_triton``)."""
    return lazy_kernel("attention_decode_partial", _define_partial_kernel)


def num_splits(batch: int, num_kv_heads: int, max_len: int, target_programs: int = TARGET_PROGRAMS,
               min_split: int = MIN_SPLIT) -> int:
    """Sequence slices per (row, KV head): about ``target_programs`` programs, slices of ``min_split`` keys or more."""
    want = -(-target_programs // (batch * num_kv_heads))
    return max(1, min(want, -(-max_len // min_split)))


def triton_attention_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor,
                            scale: float, *, block: int = BLOCK_S, num_warps: int = NUM_WARPS,
                            num_stages: int = NUM_STAGES, target_programs: int = TARGET_PROGRAMS,
                            min_split: int = MIN_SPLIT) -> torch.Tensor:
    """Attention of ``q`` ``(B, H, Dh)`` to the first ``lengths[b]`` keys of ``k_cache``/``v_cache``
    ``(B, S, Hkv, Dh)`` -> ``(B, H, Dh)`` in ``q``'s dtype. No host synchronisation (graph-capturable).
    The keyword arguments are launch settings (``bench/attention_decode_bench.py`` sweeps them)."""
    import triton

    batch, heads, head_dim = q.shape
    _, max_len, kv_heads, _ = k_cache.shape
    group = heads // kv_heads
    splits = num_splits(batch, kv_heads, max_len, target_programs, min_split)
    split_len = triton.cdiv(triton.cdiv(max_len, splits), block) * block
    partial = torch.empty(batch, heads, splits, head_dim, dtype=torch.float32, device=q.device)
    lse = torch.empty(batch, heads, splits, dtype=torch.float32, device=q.device)
    q = q.contiguous()
    partial_kernel()[(batch * kv_heads, splits)](
        q, k_cache, v_cache, lengths, partial, lse, scale, kv_heads,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        partial.stride(0), partial.stride(1), partial.stride(2), lse.stride(0), lse.stride(1),
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim, BLOCK=block,
        SPLIT_LEN=split_len, num_warps=num_warps, num_stages=num_stages,
    )
    if splits == 1:
        return partial[:, :, 0].to(q.dtype)
    weights = torch.softmax(lse, dim=-1)  # (B, H, splits); empty slices have weight 0
    return (weights.unsqueeze(-1) * partial).sum(dim=2).to(q.dtype)


class TritonDecodeKernels(SdpaKernels):
    """Decode steps in Triton (CUDA): attention (fp16/bf16, head dim 64 or 128), SSD state update, conv step.

    Prefill and training: sdpa for attention; mamba-ssm / causal-conv1d for the scan and the conv when they
    import, else the PyTorch reference.
    """

    name = "triton"
    operations = ("attention", "ssm", "conv")

    @classmethod
    def availability(cls, device: torch.device, operation: str | None = None) -> str | None:
        reason = cuda_module_unavailable(device, "triton")
        if reason is None:  # defined now, outside any torch.compile trace of a step that launches them
            try:
                define(partial_kernel, conv_kernel, ssd_kernel)
            except Exception as exc:  # availability must never raise
                return f"its Triton kernels cannot be defined ({type(exc).__name__}: {exc})"
        return reason

    @classmethod
    def priority(cls, operation: str, device: torch.device) -> int:
        # attention: above sdpa (10), below flash-attn; ssm/conv: above mamba-ssm (20), whose prefill it reuses
        return 15 if operation == "attention" else 25

    @staticmethod
    @functools.cache
    def _full_sequence(operation: str) -> KernelSet:
        """The kernel set that runs full sequences of ``operation`` (``ssm`` scans, ``conv``): mamba-ssm when
        that operation's package imports (mamba_ssm for the scan, causal_conv1d for the conv), else torch."""
        usable = MambaSsmKernels.availability(torch.device("cuda"), operation) is None
        return MambaSsmKernels() if usable else TorchKernels()

    def ssd_chunk_scan(self, x, dt, A, B, C, *, chunk_size, D=None, dt_bias=None, initial_state=None,
                       seq_idx=None):
        return self._full_sequence("ssm").ssd_chunk_scan(x, dt, A, B, C, chunk_size=chunk_size, D=D, dt_bias=dt_bias,
                                                         initial_state=initial_state, seq_idx=seq_idx)

    def causal_conv1d(self, x, weight, bias=None, *, activation=None, initial_state=None, seq_idx=None):
        return self._full_sequence("conv").causal_conv1d(x, weight, bias, activation=activation,
                                                         initial_state=initial_state, seq_idx=seq_idx)

    def ssd_step(self, state, x, dt, A, B, C, *, D=None, dt_bias=None):
        if not supports_ssd_step(state, x, dt, B, C):
            return TorchKernels().ssd_step(state, x, dt, A, B, C, D=D, dt_bias=dt_bias)
        return triton_ssd_step(state, x, dt, A, B, C, D=D, dt_bias=dt_bias)

    def causal_conv1d_step(self, x, conv_state, weight, bias=None, *, activation=None):
        if not supports_conv_step(x, conv_state, weight):
            return TorchKernels().causal_conv1d_step(x, conv_state, weight, bias, activation=activation)
        return triton_conv_step(x, conv_state, weight, bias, activation=activation)

    def attention_decode(self, q, k, v, k_cache, v_cache, positions, *, scale):
        """``q`` ``(B, H, Dh)``; writes ``k``/``v`` ``(B, Hkv, Dh)`` at ``positions`` and attends to ``:pos+1``."""
        supported = (q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] in (64, 128)
                     and k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1 and k_cache.dtype == q.dtype)
        if not supported:
            return super().attention_decode(q, k, v, k_cache, v_cache, positions, scale=scale)
        write_kv(k_cache, v_cache, k, v, positions)
        return triton_attention_decode(q, k_cache, v_cache, positions + 1, scale)
