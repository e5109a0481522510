"""Token sampling on the device, reproducible per (seed, problem, sample, token index).

Randomness does not come from a stateful generator: every draw is a counter-based hash of
``(seed, problem_key, sample_index, token_index)``. A sample's tokens therefore depend only on
the model, its prompt and those four numbers, never on which decode slot it ran in, what ran
beside it, how problems were sharded across ranks, or whether the run was resumed. The hash is
plain integer arithmetic on device tensors (no host synchronisation), so it can sit inside a
captured CUDA graph and gives bit-identical uniforms on CPU and GPU.

A token is drawn by inverse-CDF sampling with one uniform per row: the filtered
probabilities are summed cumulatively and the first token whose cumulative mass reaches
``u * total`` is taken. Filters apply in this order: temperature, top-k, min-p, top-p.
Temperature 0 is greedy (argmax), explicitly; nothing silently falls back to greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_MASK32 = 0xFFFFFFFF
# Odd multipliers below 2**31: a 32-bit value times one of them stays below 2**63, so the
# products never overflow int64 and the hash is well defined on every backend.
_MUL_A = 0x7FEB352D
_MUL_B = 0x5BD1E995
_U24 = float(1 << 24)


@dataclass(frozen=True)
class SamplingParams:
    """How a token is chosen from logits. Fixed for a run (they shape the captured graph)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (xorshift-multiply rounds) on int64 tensors holding values < 2**32."""
    x = x ^ (x >> 16)
    x = (x * _MUL_A) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MUL_B) & _MASK32
    x = x ^ (x >> 16)
    x = (x * _MUL_A) & _MASK32
    return x ^ (x >> 15)


def counter_uniform(seed: int, problem_keys: torch.Tensor, sample_indices: torch.Tensor,
                    token_indices: torch.Tensor) -> torch.Tensor:
    """One uniform in (0, 1] per row, a pure function of its four counters.

    Args:
        seed: run seed (any Python int; its low 32 bits are used).
        problem_keys: (B,) int64 in [0, 2**32), a stable key of the problem (see :func:`problem_key`).
        sample_indices: (B,) int64, the sample index within the problem.
        token_indices: (B,) int64, index of the token being drawn among the generated tokens (0 = first).

    Returns:
        (B,) float32 uniforms on the device of ``problem_keys``, multiples of 2**-24 in (0, 1].
    """
    h = _mix32(torch.full_like(problem_keys, (seed & _MASK32) ^ 0x9E3779B9))
    for counter in (problem_keys, sample_indices, token_indices):
        h = _mix32(h ^ (counter & _MASK32))
    return ((h >> 8) + 1).to(torch.float32) / _U24


def problem_key(problem_id: str) -> int:
    """A stable 32-bit key for a problem id (CRC-32 of its UTF-8 bytes)."""
    import zlib

    return zlib.crc32(problem_id.encode("utf-8")) & _MASK32


_CDF_BLOCK = 256  # tokens per block of the two-level cumulative sum


def _inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Index of the first entry whose cumulative mass reaches ``u * total``; zero-mass entries are never chosen.

    probs: (B, V) non-negative, not necessarily normalised; uniforms: (B,) in (0, 1]. Returns (B,) int64.

    Two levels, so that no scan runs over the whole vocabulary (a (B, 128k) cumulative sum is slow on
    GPUs): the mass of each block of ``_CDF_BLOCK`` tokens, a cumulative sum over blocks to find the
    block holding the target, then a cumulative sum inside that one block.
    """
    batch, vocab = probs.shape
    pad = (-vocab) % _CDF_BLOCK
    blocks = torch.nn.functional.pad(probs, (0, pad)) if pad else probs
    blocks = blocks.view(batch, -1, _CDF_BLOCK)  # (B, nb, block)
    block_mass = blocks.sum(dim=-1)  # (B, nb)
    block_cdf = block_mass.cumsum(dim=-1)
    target = uniforms.to(block_cdf.dtype).unsqueeze(-1) * block_cdf[:, -1:]  # (B, 1)
    block = torch.searchsorted(block_cdf, target, right=False).clamp_(max=block_cdf.shape[-1] - 1)  # (B, 1)
    before = block_cdf.gather(1, block) - block_mass.gather(1, block)  # mass of the blocks before it
    inner = blocks.gather(1, block.unsqueeze(-1).expand(batch, 1, _CDF_BLOCK)).squeeze(1)  # (B, block)
    inner_cdf = inner.cumsum(dim=-1) + before
    # rounding can leave the block's own total a hair below the target: aim at most at its last positive entry
    target = torch.minimum(target, inner_cdf[:, -1:])
    offset = torch.searchsorted(inner_cdf, target, right=False).squeeze(-1)
    idx = block.squeeze(-1) * _CDF_BLOCK + offset.clamp_(max=_CDF_BLOCK - 1)
    return idx.clamp_(max=vocab - 1)


def sample_tokens(logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Pick one token per row.

    Args:
        logits: (B, V) next-token logits (any float dtype; computed in float32).
        uniforms: (B,) float in (0, 1] from :func:`counter_uniform` (ignored when greedy).
        params: the sampling settings.

    Returns:
        (B,) int64 token ids. No host synchronisation; shapes depend only on ``params``.
    """
    if params.greedy:
        return logits.argmax(dim=-1)
    scores = logits.float() / params.temperature
    if params.top_k > 0 and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if params.min_p > 0.0:
        floor = params.min_p * probs.amax(dim=-1, keepdim=True)
        probs = probs.masked_fill(probs < floor, 0.0)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        total = sorted_probs.sum(dim=-1, keepdim=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        # keep a token while the mass strictly before it is below top_p of the total; the top token always stays
        sorted_probs = sorted_probs.masked_fill(mass_before >= params.top_p * total, 0.0)
        return order.gather(-1, _inverse_cdf(sorted_probs, uniforms).unsqueeze(-1)).squeeze(-1)
    return _inverse_cdf(probs, uniforms)
