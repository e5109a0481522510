"""The pure-PyTorch reference kernels against float64 token-by-token definitions."""

from __future__ import annotations

import pytest
import torch

from thinkfast.kernels import reference as ref


def _ssd_inputs(batch=2, seqlen=37, heads=4, headdim=3, groups=2, dstate=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seqlen, heads, headdim, generator=g, dtype=dtype)
    dt = torch.randn(batch, seqlen, heads, generator=g, dtype=dtype) - 1.0
    A = -torch.rand(heads, generator=g, dtype=dtype) * 2 - 0.1
    B = torch.randn(batch, seqlen, groups, dstate, generator=g, dtype=dtype)
    C = torch.randn(batch, seqlen, groups, dstate, generator=g, dtype=dtype)
    D = torch.randn(heads, generator=g, dtype=dtype)
    dt_bias = torch.randn(heads, generator=g, dtype=dtype) * 0.5
    h0 = torch.randn(batch, heads, headdim, dstate, generator=g, dtype=dtype)
    return x, dt, A, B, C, D, dt_bias, h0


def _docs(batch: int, seqlen: int, cuts: list[int]) -> torch.Tensor:
    seq_idx = torch.zeros(batch, seqlen, dtype=torch.int32)
    for c in cuts:
        seq_idx[:, c:] += 1
    seq_idx[1:, : cuts[0] + 3] = 0  # rows differ
    return torch.cumsum(torch.cat([torch.zeros(batch, 1, dtype=torch.int32),
                                   (seq_idx[:, 1:] != seq_idx[:, :-1]).int()], 1), 1)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("with_docs", [False, True])
def test_chunk_scan_equals_float64_recurrence(with_state, with_docs):
    x, dt, A, B, C, D, dt_bias, h0 = _ssd_inputs()
    # documents start mid-chunk, exactly at a chunk start (16) and one is a single token (29)
    seq_idx = _docs(2, 37, [5, 16, 28, 29]) if with_docs else None
    init = h0 if with_state else None
    y, final = ref.ssd_chunk_scan(x, dt, A, B, C, chunk_size=8, D=D, dt_bias=dt_bias, initial_state=init,
                                  seq_idx=seq_idx)
    y_ref, final_ref = ref.ssd_recurrence_reference(x, dt, A, B, C, D=D, dt_bias=dt_bias, initial_state=init,
                                                    seq_idx=seq_idx)
    err = (y - y_ref).abs().max().item()
    print(f"chunk scan vs float64 recurrence: max abs diff y {err:.2e}, state "
          f"{(final - final_ref).abs().max().item():.2e}")
    assert err < 1e-10
    torch.testing.assert_close(final, final_ref, atol=1e-10, rtol=1e-10)


def test_chunk_scan_float32_close_to_float64():
    x, dt, A, B, C, D, dt_bias, h0 = _ssd_inputs()
    y64, _ = ref.ssd_recurrence_reference(x, dt, A, B, C, D=D, dt_bias=dt_bias, initial_state=h0)
    y32, _ = ref.ssd_chunk_scan(x.float(), dt.float(), A.float(), B.float(), C.float(), chunk_size=16,
                                D=D.float(), dt_bias=dt_bias.float(), initial_state=h0.float())
    torch.testing.assert_close(y32.double(), y64, atol=1e-4, rtol=1e-4)


def test_documents_do_not_share_state():
    """A packed row equals its documents scanned one by one from zero state."""
    x, dt, A, B, C, D, dt_bias, _ = _ssd_inputs(batch=1, seqlen=30)
    seq_idx = torch.tensor([[0] * 11 + [1] * 19], dtype=torch.int32)
    y, _ = ref.ssd_chunk_scan(x, dt, A, B, C, chunk_size=8, D=D, dt_bias=dt_bias, seq_idx=seq_idx)
    for sl in (slice(0, 11), slice(11, 30)):
        alone, _ = ref.ssd_chunk_scan(x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], chunk_size=8, D=D,
                                      dt_bias=dt_bias)
        torch.testing.assert_close(y[:, sl], alone, atol=1e-12, rtol=0)


def test_ssd_step_continues_the_scan():
    x, dt, A, B, C, D, dt_bias, h0 = _ssd_inputs(seqlen=12)
    y_full, _ = ref.ssd_chunk_scan(x, dt, A, B, C, chunk_size=4, D=D, dt_bias=dt_bias, initial_state=h0)
    _, state = ref.ssd_chunk_scan(x[:, :9], dt[:, :9], A, B[:, :9], C[:, :9], chunk_size=4, D=D, dt_bias=dt_bias,
                                  initial_state=h0)
    for t in range(9, 12):
        y_t = ref.ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t], D=D, dt_bias=dt_bias)
        torch.testing.assert_close(y_t, y_full[:, t], atol=1e-12, rtol=0)


def _naive_conv(x, w, b, seq_idx, init):
    """Direct definition: y[t] = b + sum_k w[k] * input[t - (W-1) + k], inputs of other documents are zero."""
    batch, seqlen, dim = x.shape
    width = w.shape[1]
    hist = torch.cat([init.transpose(1, 2), x], dim=1)  # (b, W-1+L, d)
    y = torch.zeros_like(x)
    for bi in range(batch):
        for t in range(seqlen):
            acc = b.clone()
            for k in range(width):
                src = t - (width - 1) + k
                if seq_idx is not None and src >= 0 and seq_idx[bi, src] != seq_idx[bi, t]:
                    continue
                if seq_idx is not None and src < 0 and seq_idx[bi, t] != seq_idx[bi, 0]:
                    continue
                acc = acc + w[:, k] * hist[bi, src + width - 1]
            y[bi, t] = acc
    return y


@pytest.mark.parametrize("with_docs", [False, True])
def test_causal_conv1d_matches_definition(with_docs):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 13, 6, generator=g, dtype=torch.float64)
    w = torch.randn(6, 4, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    init = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    seq_idx = _docs(2, 13, [4, 6]) if with_docs else None
    y, final = ref.causal_conv1d(x, w, b, initial_state=init, seq_idx=seq_idx)
    torch.testing.assert_close(y, _naive_conv(x, w, b, seq_idx, init))
    torch.testing.assert_close(final, x[:, -3:].transpose(1, 2))
    # the step continues the conv exactly
    state = final.clone()
    x_next = torch.randn(2, 6, generator=g, dtype=torch.float64)
    y_next = ref.causal_conv1d_step(x_next, state, w, b, activation="silu")
    y_all, _ = ref.causal_conv1d(torch.cat([x, x_next[:, None]], 1), w, b, activation="silu", initial_state=init)
    torch.testing.assert_close(y_next, y_all[:, -1])


def test_attention_decode_equals_prefill_rows():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(3, 9, 4, 8, generator=g, dtype=torch.float64)
    k = torch.randn(3, 9, 2, 8, generator=g, dtype=torch.float64)
    v = torch.randn(3, 9, 2, 8, generator=g, dtype=torch.float64)
    full = ref.attention_prefill(q, k, v, scale=8**-0.5)
    k_cache, v_cache = torch.zeros(3, 16, 2, 8, dtype=torch.float64), torch.zeros(3, 16, 2, 8, dtype=torch.float64)
    k_cache[:, :9], v_cache[:, :9] = k, v
    positions = torch.tensor([4, 6, 8])
    for b, p in enumerate(positions.tolist()):  # stale entries beyond each row's position must be ignored
        k_cache[b, p:] = 99.0
    rows = torch.arange(3)
    out = ref.attention_decode(q[rows, positions], k[rows, positions], v[rows, positions], k_cache, v_cache,
                               positions, scale=8**-0.5)
    torch.testing.assert_close(out, full[rows, positions])


def test_attention_respects_documents():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 10, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
    seq_idx = torch.tensor([[0] * 4 + [1] * 6])
    packed = ref.attention_prefill(q, k, v, scale=0.5, seq_idx=seq_idx)
    second = ref.attention_prefill(q[:, 4:], k[:, 4:], v[:, 4:], scale=0.5)
    torch.testing.assert_close(packed[:, 4:], second)
