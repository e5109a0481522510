"""Distillation losses.

Every loss here returns a *per-item* tensor (per token, or per batch x head) in float32; the
caller picks the reduction with :func:`reduce_loss` so that every reduction has a name:

- ``"mean"``: sum over the selected items divided by their number (for token losses, the mean
  over loss tokens: each token counts once, however the batch is padded or packed);
- ``"sum"``: plain sum over the selected items (the trainer divides by the number of loss
  tokens in the whole optimizer step, across micro-batches and processes);
- ``"none"``: the per-item tensor, unchanged.

The logit losses (:func:`kl_divergence`, :func:`cross_entropy`) work on ``(N, V)`` logits and are
computed in chunks over the vocabulary by custom autograd functions: besides the inputs and the
``(N, V)`` gradient they only keep ``(N,)`` statistics (log-sum-exp, per-token loss), so no
float32 copy of a 128k-wide probability table is ever materialised, neither in the forward nor
in the backward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")
KL_DIRECTIONS = ("forward", "reverse")
DEFAULT_VOCAB_CHUNK = 8192


def _chunks(vocab_size: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(vocab_size)`` in steps of ``chunk_size``."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return [(s, min(s + chunk_size, vocab_size)) for s in range(0, vocab_size, chunk_size)]


def _scaled(logits: Tensor, start: int, end: int, temperature: float) -> Tensor:
    """Columns ``start:end`` of ``logits (N, V)`` as float32, divided by ``temperature``: ``(N, end-start)``."""
    return logits[:, start:end].float() / temperature


@torch.no_grad()
def chunked_logsumexp(logits: Tensor, temperature: float = 1.0, chunk_size: int = DEFAULT_VOCAB_CHUNK) -> Tensor:
    """``logsumexp(logits / temperature, dim=-1)`` for ``logits (N, V)``, one vocabulary chunk at a time.

    Returns ``(N,)`` float32. Uses the streaming (running maximum) form, so it is exact to
    float32 rounding whatever the chunking.
    """
    n = logits.shape[0]
    running_max = torch.full((n,), float("-inf"), dtype=torch.float32, device=logits.device)
    running_sum = torch.zeros(n, dtype=torch.float32, device=logits.device)
    for start, end in _chunks(logits.shape[1], chunk_size):
        z = _scaled(logits, start, end, temperature)
        new_max = torch.maximum(running_max, z.amax(dim=1))
        # exp(-inf - finite) = 0 on the first chunk
        running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(z - new_max[:, None]).sum(dim=1)
        running_max = new_max
    return running_max + torch.log(running_sum)


class _ChunkedKL(torch.autograd.Function):
    """Per-token KL divergence between two softmax distributions, chunked over the vocabulary."""

    @staticmethod
    def forward(ctx, student: Tensor, teacher: Tensor, temperature: float, reverse: bool, chunk_size: int) -> Tensor:
        lse_s = chunked_logsumexp(student, temperature, chunk_size)
        lse_t = chunked_logsumexp(teacher, temperature, chunk_size)
        kl = torch.zeros(student.shape[0], dtype=torch.float32, device=student.device)
        for start, end in _chunks(student.shape[1], chunk_size):
            logp_s = _scaled(student, start, end, temperature) - lse_s[:, None]
            logp_t = _scaled(teacher, start, end, temperature) - lse_t[:, None]
            if reverse:  # KL(student || teacher)
                kl += (logp_s.exp() * (logp_s - logp_t)).sum(dim=1)
            else:  # KL(teacher || student)
                kl += (logp_t.exp() * (logp_t - logp_s)).sum(dim=1)
        ctx.save_for_backward(student, teacher, lse_s, lse_t, kl)
        ctx.temperature, ctx.reverse, ctx.chunk_size = temperature, reverse, chunk_size
        return kl

    @staticmethod
    def backward(ctx, grad_kl: Tensor):
        student, teacher, lse_s, lse_t, kl = ctx.saved_tensors
        temperature, reverse = ctx.temperature, ctx.reverse
        grad = torch.empty_like(student)
        scale = (grad_kl.float() / temperature)[:, None]
        for start, end in _chunks(student.shape[1], ctx.chunk_size):
            logp_s = _scaled(student, start, end, temperature) - lse_s[:, None]
            p_s = logp_s.exp()
            if reverse:
                # d/dz_s sum p_s (log p_s - log p_t) = p_s * ((log p_s - log p_t) - KL) / T
                logp_t = _scaled(teacher, start, end, temperature) - lse_t[:, None]
                g = p_s * ((logp_s - logp_t) - kl[:, None])
            else:
                # d/dz_s sum p_t (log p_t - log p_s) = (p_s - p_t) / T
                p_t = (_scaled(teacher, start, end, temperature) - lse_t[:, None]).exp()
                g = p_s - p_t
            grad[:, start:end] = (g * scale).to(grad.dtype)
        return grad, None, None, None, None


def kl_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    direction: str = "forward",
    chunk_size: int = DEFAULT_VOCAB_CHUNK,
) -> Tensor:
    """Per-token KL divergence between ``softmax(student / T)`` and ``softmax(teacher / T)``.

    ``student_logits``, ``teacher_logits``: ``(N, V)`` (any float dtype; computed in float32).
    ``direction``: ``"forward"`` is KL(teacher || student) (mass-covering, the usual KD loss),
    ``"reverse"`` is KL(student || teacher) (mode-seeking). Returns ``(N,)`` float32 in nats,
    *not* multiplied by ``T**2``. Only the student receives a gradient.
    """
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"direction must be one of {KL_DIRECTIONS}, got {direction!r}")
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"expected two (N, V) tensors of one shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return _ChunkedKL.apply(student_logits, teacher_logits.detach(), float(temperature), direction == "reverse",
                            int(chunk_size))


class _ChunkedCE(torch.autograd.Function):
    """Per-token cross-entropy ``logsumexp(z) - z[target]``, chunked over the vocabulary."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, chunk_size: int) -> Tensor:
        lse = chunked_logsumexp(logits, 1.0, chunk_size)
        picked = logits.gather(1, targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk_size = chunk_size
        return lse - picked

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        logits, targets, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        scale = grad_loss.float()[:, None]
        rows = torch.arange(logits.shape[0], device=logits.device)
        for start, end in _chunks(logits.shape[1], ctx.chunk_size):
            g = (_scaled(logits, start, end, 1.0) - lse[:, None]).exp()
            inside = (targets >= start) & (targets < end)
            g[rows[inside], targets[inside] - start] -= 1.0
            grad[:, start:end] = (g * scale).to(grad.dtype)
        return grad, None, None


def cross_entropy(logits: Tensor, targets: Tensor, *, chunk_size: int = DEFAULT_VOCAB_CHUNK) -> Tensor:
    """Per-token cross-entropy (nats) of ``logits (N, V)`` against ``targets (N,)`` long: ``(N,)`` float32.

    Targets outside ``[0, V)`` (e.g. ``-100``) are not allowed: select loss tokens with a mask.
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, V) and targets (N,), got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    return _ChunkedCE.apply(logits, targets.long(), int(chunk_size))


def matrix_loss(student_matrix: Tensor, teacher_matrix: Tensor) -> Tensor:
    """Frobenius distance between mixing matrices, one value per sequence and head.

    ``student_matrix``, ``teacher_matrix``: ``(B, H, L, L)`` (the student's materialised SSM
    mixing matrix and the teacher's attention probabilities). Returns ``(B, H)`` float32:
    ``||S - T||_F`` over the ``L x L`` entries.
    """
    if student_matrix.shape != teacher_matrix.shape:
        raise ValueError(f"matrix shapes differ: {tuple(student_matrix.shape)} vs {tuple(teacher_matrix.shape)}")
    diff = student_matrix.float() - teacher_matrix.detach().float()
    return torch.linalg.matrix_norm(diff, ord="fro")


def hidden_loss(student_hidden: Tensor, teacher_hidden: Tensor) -> Tensor:
    """L2 distance between hidden states, one value per token.

    ``student_hidden``, ``teacher_hidden``: ``(..., D)``. Returns ``(...)`` float32: the Euclidean
    norm ``||s - t||_2`` over the model dimension (not squared, not divided by ``D``).
    """
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"hidden shapes differ: {tuple(student_hidden.shape)} vs {tuple(teacher_hidden.shape)}")
    diff = student_hidden.float() - teacher_hidden.detach().float()
    return torch.linalg.vector_norm(diff, dim=-1)


def reduce_loss(per_item: Tensor, mask: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Reduce a per-item loss over the items where ``mask`` is true (all items when ``mask`` is None).

    ``per_item``: any shape; ``mask``: same shape, bool. ``"mean"`` divides by the number of
    selected items (0 when none is selected), ``"sum"`` does not, ``"none"`` returns
    ``per_item * mask``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if mask is None:
        mask = torch.ones_like(per_item, dtype=torch.bool)
    if mask.shape != per_item.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from loss shape {tuple(per_item.shape)}")
    masked = torch.where(mask, per_item, torch.zeros_like(per_item))
    if reduction == "none":
        return masked
    total = masked.sum()
    if reduction == "sum":
        return total
    return total / mask.sum().clamp(min=1)
