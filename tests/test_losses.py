"""Distillation losses against direct (unchunked) computations, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from thinkfast.distill.losses import (
    chunked_logsumexp,
    cross_entropy,
    hidden_loss,
    kl_divergence,
    matrix_loss,
    reduce_loss,
)


def _logits(n: int = 6, v: int = 37, seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, v, generator=g, dtype=torch.float64) * scale,
            torch.randn(n, v, generator=g, dtype=torch.float64) * scale)


def _direct_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float, direction: str) -> torch.Tensor:
    logp_s = F.log_softmax(student / temperature, dim=-1)
    logp_t = F.log_softmax(teacher / temperature, dim=-1)
    if direction == "forward":
        return (logp_t.exp() * (logp_t - logp_s)).sum(-1)
    return (logp_s.exp() * (logp_s - logp_t)).sum(-1)


@pytest.mark.parametrize("chunk", [5, 16, 37, 1000])
def test_chunked_logsumexp_matches_torch(chunk):
    logits, _ = _logits(scale=30.0)
    for temperature in (1.0, 0.5, 2.0):
        expected = torch.logsumexp(logits / temperature, dim=-1).float()
        torch.testing.assert_close(chunked_logsumexp(logits, temperature, chunk), expected)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.7])
@pytest.mark.parametrize("chunk", [8, 37, 64])
def test_kl_value_and_gradient_match_direct(direction, temperature, chunk):
    student, teacher = _logits()
    weights = torch.rand(student.shape[0], dtype=torch.float64)  # upstream gradient per token

    s1 = student.clone().requires_grad_(True)
    kl = kl_divergence(s1, teacher, temperature=temperature, direction=direction, chunk_size=chunk)
    (kl.double() * weights).sum().backward()

    s2 = student.clone().requires_grad_(True)
    expected = _direct_kl(s2, teacher, temperature, direction)
    (expected * weights).sum().backward()

    torch.testing.assert_close(kl.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-4, atol=1e-6)


def test_kl_directions_differ_and_vanish_on_equal_inputs():
    student, teacher = _logits()
    fwd = kl_divergence(student, teacher, direction="forward")
    rev = kl_divergence(student, teacher, direction="reverse")
    assert (fwd > 0).all() and (rev > 0).all()
    assert not torch.allclose(fwd, rev)
    same = kl_divergence(student, student.clone(), direction="forward")
    torch.testing.assert_close(same, torch.zeros_like(same), atol=1e-5, rtol=0)


def test_kl_bf16_inputs_give_bf16_gradient_close_to_float():
    student, teacher = _logits(n=4, v=50)
    s_bf = student.to(torch.bfloat16).requires_grad_(True)
    kl = kl_divergence(s_bf, teacher.to(torch.bfloat16), chunk_size=16)
    assert kl.dtype == torch.float32
    kl.sum().backward()
    assert s_bf.grad.dtype == torch.bfloat16
    s64 = s_bf.detach().double().requires_grad_(True)
    _direct_kl(s64, teacher.to(torch.bfloat16).double(), 1.0, "forward").sum().backward()
    torch.testing.assert_close(s_bf.grad.double(), s64.grad, rtol=2e-2, atol=2e-3)


def test_kl_teacher_gets_no_gradient():
    student, teacher = _logits()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    kl_divergence(student, teacher).sum().backward()
    assert teacher.grad is None and student.grad is not None


@pytest.mark.parametrize("chunk", [7, 37, 100])
def test_cross_entropy_matches_torch(chunk):
    logits, _ = _logits()
    targets = torch.tensor([0, 36, 5, 7, 20, 36])
    l1 = logits.clone().requires_grad_(True)
    ce = cross_entropy(l1, targets, chunk_size=chunk)
    w = torch.arange(1, 7, dtype=torch.float64)
    (ce.double() * w).sum().backward()
    l2 = logits.clone().requires_grad_(True)
    expected = F.cross_entropy(l2, targets, reduction="none")
    (expected * w).sum().backward()
    torch.testing.assert_close(ce.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l1.grad, l2.grad, rtol=1e-4, atol=1e-6)


def test_matrix_loss_is_frobenius_per_batch_and_head():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 5, 5, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 5, 5, generator=g)
    loss = matrix_loss(s, t)
    assert loss.shape == (2, 3)
    expected = ((s.detach() - t) ** 2).sum(dim=(-1, -2)).sqrt()
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    torch.testing.assert_close(s.grad, (s.detach() - t) / expected[..., None, None])


def test_hidden_loss_is_per_token_euclidean_norm():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 4, 8, generator=g)
    t = torch.randn(2, 4, 8, generator=g)
    loss = hidden_loss(s, t)
    assert loss.shape == (2, 4)
    torch.testing.assert_close(loss, ((s - t) ** 2).sum(-1).sqrt())


def test_reduce_loss_named_reductions():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    assert reduce_loss(per_token, mask, "sum").item() == pytest.approx(10.0)
    assert reduce_loss(per_token, mask, "mean").item() == pytest.approx(10.0 / 3)
    assert reduce_loss(per_token, None, "mean").item() == pytest.approx(3.5)
    torch.testing.assert_close(reduce_loss(per_token, mask, "none"), torch.tensor([[1.0, 0, 3], [0, 0, 6]]))
    assert reduce_loss(per_token, torch.zeros_like(mask), "mean").item() == 0.0
    with pytest.raises(ValueError):
        reduce_loss(per_token, mask, "batchmean")


def test_masked_tokens_get_zero_gradient():
    student, teacher = _logits()
    student.requires_grad_(True)
    mask = torch.tensor([True, False, True, False, False, True])
    reduce_loss(kl_divergence(student, teacher), mask, "mean").backward()
    assert (student.grad[~mask] == 0).all()
    assert (student.grad[mask].abs() > 0).any()
