"""Pure-PyTorch reference kernels: SSD chunk scan and step, causal depthwise conv1d and step, attention.

They run on any device (CPU included) and define the semantics every other kernel plugin must
reproduce. Shapes follow mamba_ssm's conventions:

- ``x``: ``(batch, seqlen, nheads, headdim)``; ``dt``: ``(batch, seqlen, nheads)`` (raw, before
  ``softplus(dt + dt_bias)``); ``A``: ``(nheads,)`` (negative); ``B``, ``C``: ``(batch, seqlen, ngroups,
  dstate)`` with ``nheads % ngroups == 0`` (head ``h`` reads group ``h // (nheads // ngroups)``);
  SSM state: ``(batch, nheads, headdim, dstate)``.
- ``seq_idx``: ``(batch, seqlen)`` int, non-decreasing document index of each token; neither the SSM
  state nor the conv window nor attention crosses a change of index. An initial state belongs to the
  first document of each row.

Everything accumulates in float32 (float64 inputs stay float64, which the tests use).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def expand_groups(t: torch.Tensor, nheads: int, dim: int = -2) -> torch.Tensor:
    """Repeat group slices GQA-style so that there is one per head: ``(..., G, N) -> (..., H, N)``."""
    groups = t.shape[dim]
    if groups == nheads:
        return t
    return t.repeat_interleave(nheads // groups, dim=dim)


def ssd_chunk_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    chunk_size: int,
    D: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD (Mamba-2) scan: quadratic inside each chunk, recurrent across chunks.

    Recurrence per head (``a_t = exp(dt_t * A)``, ``dt_t = softplus(dt_raw + dt_bias)``)::

        h_t = a_t * h_{t-1} + dt_t * x_t B_t^T          (h: (headdim, dstate); reset at a new document)
        y_t = h_t C_t + D * x_t

    Args: see the module docstring; ``chunk_size`` in tokens; ``D``: ``(nheads,)``; ``dt_bias``: ``(nheads,)``;
    ``initial_state``: ``(batch, nheads, headdim, dstate)``.

    Returns:
        ``y`` ``(batch, seqlen, nheads, headdim)`` in ``x.dtype`` and the final state
        ``(batch, nheads, headdim, dstate)`` in the accumulation dtype (state after the last token).
    """
    batch, seqlen, nheads, headdim = x.shape
    acc = _acc_dtype(x)
    dt = dt.to(acc)
    if dt_bias is not None:
        dt = dt + dt_bias.to(acc)
    dt = F.softplus(dt)  # (b, l, h)
    Bh = expand_groups(B, nheads).to(acc)  # (b, l, h, n)
    Ch = expand_groups(C, nheads).to(acc)
    xf = x.to(acc)
    dstate = Bh.shape[-1]
    if seq_idx is None:
        seq_idx = torch.zeros(batch, seqlen, dtype=torch.long, device=x.device)
    seq_idx = seq_idx.long()

    pad = (-seqlen) % chunk_size
    if pad:  # padded tokens: dt = 0 (decay 1, no input), same document as the last real token
        xf = F.pad(xf, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        Bh = F.pad(Bh, (0, 0, 0, 0, 0, pad))
        Ch = F.pad(Ch, (0, 0, 0, 0, 0, pad))
        seq_idx = torch.cat([seq_idx, seq_idx[:, -1:].expand(batch, pad)], dim=1)
    nchunks = xf.shape[1] // chunk_size
    q = chunk_size

    def chunked(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, nchunks, q, *t.shape[2:])

    xc, dtc, Bc, Cc, sc = chunked(xf), chunked(dt), chunked(Bh), chunked(Ch), chunked(seq_idx)
    dA = dtc * A.to(acc)  # (b, c, q, h)
    dA_cs = torch.cumsum(dA, dim=2)  # (b, c, q, h)

    # Within-chunk (diagonal blocks): L[i, j] = exp(cs_i - cs_j) for j <= i in the same document.
    seg = dA_cs.unsqueeze(3) - dA_cs.unsqueeze(2)  # (b, c, q_i, q_j, h)
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    same_doc = sc.unsqueeze(3) == sc.unsqueeze(2)  # (b, c, q_i, q_j)
    keep = (causal & same_doc).unsqueeze(-1)
    decay = torch.exp(torch.where(keep, seg, torch.full_like(seg, -math.inf)))
    scores = torch.einsum("bcihn,bcjhn->bcijh", Cc, Bc) * decay * dtc.unsqueeze(2)
    y = torch.einsum("bcijh,bcjhp->bcihp", scores, xc)

    # State contributed by each chunk, at its last token (only tokens of the last token's document).
    last_doc = sc[:, :, -1:]  # (b, c, 1)
    to_end = torch.exp(dA_cs[:, :, -1:, :] - dA_cs) * dtc * (sc == last_doc).unsqueeze(-1)  # (b, c, q, h)
    chunk_states = torch.einsum("bcjh,bcjhp,bcjhn->bchpn", to_end, xc, Bc)

    # Across chunks: carry the state, reset where the document changes.
    state = (
        initial_state.to(acc)
        if initial_state is not None
        else torch.zeros(batch, nheads, headdim, dstate, dtype=acc, device=x.device)
    )
    prev_doc = seq_idx[:, :1]  # the initial state belongs to the first document
    outputs = []
    for c in range(nchunks):
        carried = (sc[:, c] == prev_doc).unsqueeze(-1) * torch.exp(dA_cs[:, c])  # (b, q, h)
        y_off = torch.einsum("bihn,bhpn,bih->bihp", Cc[:, c], state, carried)
        outputs.append(y[:, c] + y_off)
        survives = (sc[:, c, -1] == prev_doc[:, 0]).to(acc)[:, None] * torch.exp(dA_cs[:, c, -1])  # (b, h)
        state = state * survives[:, :, None, None] + chunk_states[:, c]
        prev_doc = sc[:, c, -1:]
    out = torch.stack(outputs, dim=1).reshape(batch, nchunks * q, nheads, headdim)[:, :seqlen]
    if D is not None:
        out = out + D.to(acc)[:, None] * xf[:, :seqlen]
    return out.to(x.dtype), state


def ssd_recurrence_reference(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    D: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token float64 recurrence with the semantics of :func:`ssd_chunk_scan` (for tests).

    Returns ``y`` ``(batch, seqlen, nheads, headdim)`` and the final state, both float64.
    """
    f64 = torch.float64
    batch, seqlen, nheads, headdim = x.shape
    dtf = dt.to(f64) + (dt_bias.to(f64) if dt_bias is not None else 0.0)
    dtf = F.softplus(dtf)
    Bh, Ch = expand_groups(B, nheads).to(f64), expand_groups(C, nheads).to(f64)
    state = (
        initial_state.to(f64).clone()
        if initial_state is not None
        else torch.zeros(batch, nheads, headdim, Bh.shape[-1], dtype=f64, device=x.device)
    )
    ys = []
    for t in range(seqlen):
        if seq_idx is not None and t > 0:
            state = state * (seq_idx[:, t] == seq_idx[:, t - 1]).to(f64)[:, None, None, None]
        y_t, state = _ssd_update(state, x[:, t].to(f64), dtf[:, t], A.to(f64), Bh[:, t], Ch[:, t],
                                 D.to(f64) if D is not None else None)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


def _ssd_update(
    state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrence step; ``dt`` already softplus'd. state ``(b, h, p, n)``, x ``(b, h, p)``, B/C ``(b, h, n)``."""
    decay = torch.exp(dt * A)  # (b, h)
    state = state * decay[:, :, None, None] + (dt[:, :, None] * x)[..., None] * B[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", state, C)
    if D is not None:
        y = y + D[:, None] * x
    return y, state


def ssd_step(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    D: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decode step; updates ``state`` ``(batch, nheads, headdim, dstate)`` in place.

    ``x``: ``(batch, nheads, headdim)``; ``dt``: ``(batch, nheads)`` raw; ``B``, ``C``: ``(batch, ngroups, dstate)``.
    Returns ``y`` ``(batch, nheads, headdim)`` in ``x.dtype``.
    """
    nheads = x.shape[1]
    acc = _acc_dtype(state)
    dtf = dt.to(acc) + (dt_bias.to(acc) if dt_bias is not None else 0.0)
    y, new_state = _ssd_update(
        state.to(acc), x.to(acc), F.softplus(dtf), A.to(acc), expand_groups(B, nheads).to(acc),
        expand_groups(C, nheads).to(acc), D.to(acc) if D is not None else None,
    )
    state.copy_(new_state)
    return y.to(x.dtype)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    activation: str | None = None,
    initial_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal depthwise conv1d over time.

    Args:
        x: ``(batch, seqlen, dim)``. weight: ``(dim, width)``; bias: ``(dim,)``.
        activation: ``None``/``"identity"`` or ``"silu"``.
        initial_state: ``(batch, dim, width - 1)``, the inputs before ``x[:, 0]`` (oldest first).
        seq_idx: ``(batch, seqlen)``; taps never reach into another document.

    Returns:
        ``y`` ``(batch, seqlen, dim)`` and the final state ``(batch, dim, width - 1)`` (last inputs).
    """
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    xt = x.transpose(1, 2)  # (b, d, l)
    prefix = initial_state.to(x.dtype) if initial_state is not None else x.new_zeros(batch, dim, width - 1)
    xpad = torch.cat([prefix, xt], dim=2)  # (b, d, l + w - 1)
    acc = _acc_dtype(x)
    out = torch.zeros(batch, dim, seqlen, dtype=acc, device=x.device)
    for k in range(width):
        tap = xpad[:, :, k : k + seqlen].to(acc) * weight[:, k].to(acc)[None, :, None]
        lag = width - 1 - k
        if seq_idx is not None and lag > 0:
            src = torch.cat([seq_idx[:, :1].expand(batch, lag), seq_idx], dim=1)[:, :seqlen]
            tap = tap * (src == seq_idx).to(acc)[:, None, :]
        out = out + tap
    if bias is not None:
        out = out + bias.to(acc)[None, :, None]
    if activation == "silu":
        out = F.silu(out)
    final_state = xpad[:, :, -(width - 1) :] if width > 1 else x.new_zeros(batch, dim, 0)
    return out.transpose(1, 2).to(x.dtype), final_state.contiguous()


def causal_conv1d_step(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    activation: str | None = None,
) -> torch.Tensor:
    """One decode step of :func:`causal_conv1d`; shifts ``conv_state`` ``(batch, dim, width - 1)`` in place.

    ``x``: ``(batch, dim)``. Returns ``(batch, dim)``.
    """
    acc = _acc_dtype(x)
    window = torch.cat([conv_state, x.unsqueeze(-1).to(conv_state.dtype)], dim=2)  # (b, d, w)
    out = (window.to(acc) * weight.to(acc)).sum(-1)
    if bias is not None:
        out = out + bias.to(acc)
    if activation == "silu":
        out = F.silu(out)
    conv_state.copy_(window[:, :, 1:])
    return out.to(x.dtype)


def expand_kv(t: torch.Tensor, nheads: int) -> torch.Tensor:
    """``(batch, seqlen, nkv, headdim) -> (batch, seqlen, nheads, headdim)`` by repeating each KV head."""
    return expand_groups(t, nheads, dim=2)


def attention_prefill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float, seq_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal (block-diagonal with ``seq_idx``) softmax attention with GQA.

    ``q``: ``(batch, seqlen, nheads, headdim)``; ``k``, ``v``: ``(batch, seqlen, nkv, headdim)``.
    Softmax in float32 (float64 for float64 inputs). Returns ``(batch, seqlen, nheads, headdim)``.
    """
    probs = attention_probs(q, k, scale=scale, seq_idx=seq_idx)  # (b, h, l, l)
    vh = expand_kv(v, q.shape[2])
    return torch.einsum("bhij,bjhd->bihd", probs.to(v.dtype), vh)


def attention_probs(
    q: torch.Tensor, k: torch.Tensor, *, scale: float, seq_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal softmax attention probabilities ``(batch, nheads, seqlen, seqlen)`` in float32 (float64 for
    float64 inputs)."""
    seqlen = q.shape[1]
    kh = expand_kv(k, q.shape[2])
    acc = _acc_dtype(q)
    scores = torch.einsum("bihd,bjhd->bhij", q.to(acc), kh.to(acc)) * scale
    allowed = torch.ones(seqlen, seqlen, dtype=torch.bool, device=q.device).tril()
    if seq_idx is not None:
        allowed = allowed & (seq_idx[:, :, None] == seq_idx[:, None, :])[:, None]
    scores = scores.masked_fill(~allowed, -math.inf)
    return torch.softmax(scores, dim=-1)


def write_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
) -> None:
    """Write one token per row: ``k_cache[b, positions[b]] = k[b]``; caches ``(batch, maxlen, nkv, headdim)``."""
    rows = torch.arange(k_cache.shape[0], device=k_cache.device)
    k_cache[rows, positions] = k.to(k_cache.dtype)
    v_cache[rows, positions] = v.to(v_cache.dtype)


def attention_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    positions: torch.Tensor,
    *,
    scale: float,
) -> torch.Tensor:
    """Write the new key/value at ``positions`` and attend over ``cache[b, : positions[b] + 1]``.

    ``q``: ``(batch, nheads, headdim)``; ``k``, ``v``: ``(batch, nkv, headdim)``; caches
    ``(batch, maxlen, nkv, headdim)``; ``positions``: ``(batch,)`` long. Returns ``(batch, nheads, headdim)``.
    """
    write_kv(k_cache, v_cache, k, v, positions)
    nheads = q.shape[1]
    kh = expand_kv(k_cache, nheads)  # (b, s, h, d)
    vh = expand_kv(v_cache, nheads)
    acc = _acc_dtype(q)
    scores = torch.einsum("bhd,bshd->bhs", q.to(acc), kh.to(acc)) * scale
    valid = torch.arange(k_cache.shape[1], device=q.device)[None, :] <= positions[:, None]  # (b, s)
    scores = scores.masked_fill(~valid[:, None, :], -math.inf)
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("bhs,bshd->bhd", probs.to(vh.dtype), vh).to(q.dtype)
