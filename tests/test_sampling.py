"""The on-device sampler: counters, greedy, filters and the sampled distribution."""

from __future__ import annotations

import pytest
import torch

from thinkfast.generate.sampling import SamplingParams, counter_uniform, problem_key, sample_tokens

N = 20_000


def _uniforms(n: int, seed: int = 0, key: int = 7, sample: int = 3) -> torch.Tensor:
    """``n`` draws for one (problem, sample) at token indices 0..n-1."""
    return counter_uniform(seed, torch.full((n,), key), torch.full((n,), sample), torch.arange(n))


def test_counter_uniform_range_and_moments():
    u = _uniforms(N)
    assert u.dtype == torch.float32
    assert float(u.min()) > 0.0 and float(u.max()) <= 1.0
    assert abs(float(u.mean()) - 0.5) < 0.01
    assert abs(float(u.var()) - 1 / 12) < 0.005
    # consecutive draws are not correlated
    assert abs(float(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1])) < 0.03


def test_counter_uniform_is_a_function_of_its_counters_only():
    keys = torch.tensor([5, 9, 5, 2**32 - 1])
    samples = torch.tensor([0, 1, 0, 3])
    steps = torch.tensor([4, 4, 4, 0])
    u = counter_uniform(123, keys, samples, steps)
    assert u[0] == u[2]  # same counters, different rows
    alone = counter_uniform(123, keys[1:2], samples[1:2], steps[1:2])
    assert u[1] == alone[0]  # batch composition does not matter
    assert not torch.equal(u, counter_uniform(124, keys, samples, steps))  # the seed matters
    # each counter matters
    base = counter_uniform(1, torch.tensor([1]), torch.tensor([1]), torch.tensor([1]))
    for changed in ((2, 1, 1), (1, 2, 1), (1, 1, 2)):
        other = counter_uniform(1, *(torch.tensor([c]) for c in changed))
        assert other != base


def test_problem_key_is_stable_32_bit():
    assert problem_key("gsm8k-test-00001") == problem_key("gsm8k-test-00001")
    assert problem_key("a") != problem_key("b")
    assert 0 <= problem_key("x" * 100) < 2**32


def test_temperature_zero_is_argmax():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    u = torch.rand(6)
    assert torch.equal(sample_tokens(logits, u, SamplingParams(temperature=0.0)), logits.argmax(-1))


def _empirical(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Frequencies of N draws from one logits row (V,), one per token index."""
    tokens = sample_tokens(logits.expand(N, -1), _uniforms(N), params)
    return torch.bincount(tokens, minlength=logits.numel()).double() / N


def _close(freq: torch.Tensor, probs: torch.Tensor) -> None:
    # 5 standard errors of a binomial proportion
    tol = 5 * (probs * (1 - probs) / N).sqrt() + 1e-9
    assert torch.all((freq - probs).abs() <= tol), (freq, probs)


LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_plain_sampling_matches_softmax(temperature):
    freq = _empirical(LOGITS, SamplingParams(temperature=temperature))
    _close(freq, torch.softmax(LOGITS.double() / temperature, -1))


def test_top_k_keeps_k_tokens_renormalised():
    freq = _empirical(LOGITS, SamplingParams(top_k=3))
    probs = torch.softmax(LOGITS.double(), -1)
    probs[3:] = 0
    _close(freq, probs / probs.sum())


def test_top_p_keeps_the_nucleus():
    probs = torch.softmax(LOGITS.double(), -1)  # 0.35, 0.21, 0.13, ...
    cum = probs.cumsum(0)
    top_p = float(cum[2]) - 0.01  # the nucleus is the first three tokens
    freq = _empirical(LOGITS, SamplingParams(top_p=top_p))
    kept = probs.clone()
    kept[3:] = 0
    _close(freq, kept / kept.sum())


def test_min_p_drops_tokens_below_a_fraction_of_the_top():
    probs = torch.softmax(LOGITS.double(), -1)
    freq = _empirical(LOGITS, SamplingParams(min_p=0.3))
    kept = torch.where(probs >= 0.3 * probs.max(), probs, torch.zeros_like(probs))
    assert int((kept > 0).sum()) == 3
    _close(freq, kept / kept.sum())


def test_masked_tokens_are_never_chosen_even_at_extreme_uniforms():
    logits = torch.tensor([[-float("inf"), 0.0, -float("inf"), 1.0, -float("inf")]]).expand(4, -1)
    u = torch.tensor([1.0, 2.0**-24, 0.5, 1.0 - 2.0**-24])
    tokens = sample_tokens(logits, u, SamplingParams())
    assert set(tokens.tolist()) <= {1, 3}
    assert int(sample_tokens(logits[:1], torch.tensor([2.0**-24]), SamplingParams())) == 1
    assert int(sample_tokens(logits[:1], torch.tensor([1.0]), SamplingParams())) == 3


def test_rows_are_independent_of_each_other():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 300, generator=gen)
    u = torch.rand(8, generator=gen)
    params = SamplingParams(temperature=0.9, top_p=0.9, top_k=50, min_p=0.05)
    batch = sample_tokens(logits, u, params)
    singles = torch.cat([sample_tokens(logits[i:i + 1], u[i:i + 1], params) for i in range(8)])
    assert torch.equal(batch, singles)


@pytest.mark.parametrize("vocab", [1000, 4096, 49152 + 7])
def test_two_level_inverse_cdf_equals_the_full_scan(vocab):
    """The blocked search picks exactly what a single cumulative sum over the vocabulary would."""
    from thinkfast.generate.sampling import _inverse_cdf

    gen = torch.Generator().manual_seed(vocab)
    probs = torch.rand(64, vocab, generator=gen, dtype=torch.float64)
    probs[probs < 0.3] = 0.0  # zero-mass runs, also across block edges
    probs[:, :300] = 0.0
    uniforms = torch.rand(64, generator=gen, dtype=torch.float64).clamp_min(1e-9)
    uniforms[0], uniforms[1] = 1.0, 1e-9
    cdf = probs.cumsum(-1)
    expected = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:], right=False).squeeze(-1)
    got = _inverse_cdf(probs, uniforms)
    assert torch.equal(got, expected)
    assert bool((probs.gather(1, got[:, None]) > 0).all())
