"""Triton kernels for one decode step of a Mamba-2 mixer: the causal-conv step and the SSD state update.

Both are memory-bound: a decode step reads and writes every slot's conv and SSM state once. Each kernel
is one launch that reads its inputs through their strides (the model hands over views of the
in-projection's output, not copies), so the step moves the state bytes and little else.

- :func:`triton_conv_step`: one program per (row, block of channels); the window is the ``K - 1`` cached
  inputs plus the new one, read one column (one vector of channels) at a time, and the state shifts by
  one in place.
- :func:`triton_ssd_step`: one program per (row, head, block of head dims); ``state * exp(dt A) + dt x B``
  is written back in place and contracted with ``C`` in registers, so the state is read and written once.

Semantics are those of :func:`thinkfast.kernels.reference.causal_conv1d_step` and
:func:`thinkfast.kernels.reference.ssd_step` (float32 arithmetic, outputs in the input dtype, the state
stored in its own dtype). Triton is imported lazily.

Both launches run outside ``torch.compile`` graphs on purpose (``torch.compiler.disable``: the compiled
decode step breaks around them). Captured inside the graph, as the ``triton`` plugin's attention kernel
is, they made a compiled Llamba-1B step 2-4% slower on an H100 (inductor's copies and layout choices
around them; docs/performance.md, "Triton kernels inside the compiled step").
"""

from __future__ import annotations

import torch
from thinkfast_plugins.kernels.lazy_triton import lazy_kernel

CONV_BLOCK_D = 256  # channels per conv program
SSD_BLOCK_P = 64  # head dims per SSD program at most (one program per head at head_dim 64)
SSD_NUM_WARPS = 4  # block_p and warps measured best on an H200 (bench/decode_kernels_bench.py)


def _define_conv_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def conv_step(X, STATE, W, BIAS, OUT, dim, sxb, ssb, ssd, sss, swd, swk, sob,
                  WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr):
        b = tl.program_id(0)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = d < dim
        row = STATE + b * ssb + d * ssd  # (BLOCK_D,) pointers to each channel's oldest cached input
        x = tl.load(X + b * sxb + d, mask=dmask, other=0.0)
        acc = x.to(tl.float32) * tl.load(W + d * swd + (WIDTH - 1) * swk, mask=dmask, other=0.0).to(tl.float32)
        # one column of the window at a time: with the channels contiguous (the model's cache layout) every
        # load and store is a contiguous vector; column j moves to j - 1 once it has been read
        for j in tl.static_range(WIDTH - 1):
            column = tl.load(row + j * sss, mask=dmask, other=0.0)
            acc += column.to(tl.float32) * tl.load(W + d * swd + j * swk, mask=dmask, other=0.0).to(tl.float32)
            if j > 0:
                tl.store(row + (j - 1) * sss, column, mask=dmask)
        tl.store(row + (WIDTH - 2) * sss, x.to(STATE.dtype.element_ty), mask=dmask)
        if HAS_BIAS:
            acc += tl.load(BIAS + d, mask=dmask, other=0.0).to(tl.float32)
        if SILU:
            acc = acc / (1.0 + tl.exp(-acc))
        tl.store(OUT + b * sob + d, acc.to(OUT.dtype.element_ty), mask=dmask)

    return conv_step


def conv_kernel():
    """The conv-step kernel (defined on first use, :func:`~thinkfast_plugins.kernels.lazy_triton.lazy_kernel`)."""
    return lazy_kernel("conv_step", _define_conv_kernel)


@torch.compiler.disable  # see the module docstring
def triton_conv_step(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None = None, *, activation: str | None = None,
                     block_d: int = CONV_BLOCK_D) -> torch.Tensor:
    """One causal-conv step: ``x`` ``(B, D)`` (any row stride, unit channel stride), ``conv_state``
    ``(B, D, K - 1)`` (any strides; fastest with unit channel stride, the layout
    :meth:`~thinkfast.models.ssm.SSMMixer.allocate_cache` gives) shifted in place, ``weight`` ``(D, K)``,
    ``bias`` ``(D,)`` -> ``(B, D)`` in ``x.dtype``; ``block_d`` channels per program."""
    import triton

    batch, dim = x.shape
    out = torch.empty(batch, dim, dtype=x.dtype, device=x.device)
    conv_kernel()[(batch, triton.cdiv(dim, block_d))](
        x, conv_state, weight, bias if bias is not None else weight, out, dim,
        x.stride(0), conv_state.stride(0), conv_state.stride(1), conv_state.stride(2), weight.stride(0),
        weight.stride(1), out.stride(0), WIDTH=weight.shape[1], HAS_BIAS=bias is not None,
        SILU=activation == "silu", BLOCK_D=block_d,
    )
    return out


def _define_ssd_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def ssd_step(STATE, X, DT, A, B, C, D, DT_BIAS, Y, nheads, head_dim, dstate, heads_per_group,
                 s_sb, s_sh, s_sp, s_xb, s_xh, s_dtb, s_bb, s_bg, s_cb, s_cg, s_yb, s_yh,
                 HAS_D: tl.constexpr, HAS_DT_BIAS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
        pid = tl.program_id(0)
        b = pid // nheads
        h = pid % nheads
        g = h // heads_per_group
        p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        n = tl.arange(0, BLOCK_N)
        pmask = p < head_dim
        nmask = n < dstate
        dt = tl.load(DT + b * s_dtb + h).to(tl.float32)
        if HAS_DT_BIAS:
            dt += tl.load(DT_BIAS + h).to(tl.float32)
        # softplus, linear above 20 as torch; log(1 + e) loses e's digits when e is small, so a series there
        e = tl.exp(dt)
        series = e * (1.0 - e * (0.5 - e * (1.0 / 3.0 - 0.25 * e)))  # e - e^2/2 + e^3/3 - e^4/4
        dt = tl.where(dt > 20.0, dt, tl.where(e < 1e-2, series, tl.log(1.0 + e)))
        decay = tl.exp(dt * tl.load(A + h).to(tl.float32))
        x = tl.load(X + b * s_xb + h * s_xh + p, mask=pmask, other=0.0).to(tl.float32)
        bvec = tl.load(B + b * s_bb + g * s_bg + n, mask=nmask, other=0.0).to(tl.float32)
        cvec = tl.load(C + b * s_cb + g * s_cg + n, mask=nmask, other=0.0).to(tl.float32)
        ptrs = STATE + b * s_sb + h * s_sh + p[:, None] * s_sp + n[None, :]
        smask = pmask[:, None] & nmask[None, :]
        state = tl.load(ptrs, mask=smask, other=0.0).to(tl.float32)
        state = state * decay + (dt * x)[:, None] * bvec[None, :]
        tl.store(ptrs, state.to(STATE.dtype.element_ty), mask=smask)
        y = tl.sum(state * cvec[None, :], axis=1)
        if HAS_D:
            y += x * tl.load(D + h).to(tl.float32)
        tl.store(Y + b * s_yb + h * s_yh + p, y.to(Y.dtype.element_ty), mask=pmask)

    return ssd_step


def ssd_kernel():
    """The SSD-step kernel (defined on first use, :func:`~thinkfast_plugins.kernels.lazy_triton.lazy_kernel`)."""
    return lazy_kernel("ssd_step", _define_ssd_kernel)


@torch.compiler.disable  # see the module docstring
def triton_ssd_step(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                    C: torch.Tensor, *, D: torch.Tensor | None = None, dt_bias: torch.Tensor | None = None,
                    block_p: int = SSD_BLOCK_P, num_warps: int = SSD_NUM_WARPS) -> torch.Tensor:
    """One SSD step: ``state`` ``(batch, nheads, headdim, dstate)`` updated in place (unit stride on
    ``dstate``); ``x`` ``(batch, nheads, headdim)``, ``dt`` ``(batch, nheads)`` raw, ``A`` ``(nheads,)``,
    ``B``/``C`` ``(batch, ngroups, dstate)`` -> ``y`` ``(batch, nheads, headdim)`` in ``x.dtype``.
    ``block_p`` head dims per program and ``num_warps`` are launch settings (``bench/decode_kernels_bench.py``)."""
    import triton

    batch, nheads, head_dim, dstate = state.shape
    groups = B.shape[1]
    block_p = min(block_p, triton.next_power_of_2(head_dim))
    y = torch.empty(batch, nheads, head_dim, dtype=x.dtype, device=x.device)
    A = A.float().contiguous()
    D = D.contiguous() if D is not None else None
    dt_bias = dt_bias.contiguous() if dt_bias is not None else None
    ssd_kernel()[(batch * nheads, triton.cdiv(head_dim, block_p))](
        state, x, dt, A, B, C, D if D is not None else A, dt_bias if dt_bias is not None else A, y,
        nheads, head_dim, dstate, nheads // groups,
        state.stride(0), state.stride(1), state.stride(2), x.stride(0), x.stride(1), dt.stride(0),
        B.stride(0), B.stride(1), C.stride(0), C.stride(1), y.stride(0), y.stride(1),
        HAS_D=D is not None, HAS_DT_BIAS=dt_bias is not None, BLOCK_P=block_p,
        BLOCK_N=triton.next_power_of_2(dstate), num_warps=num_warps,
    )
    return y


def supports_ssd_step(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, B: torch.Tensor,
                      C: torch.Tensor) -> bool:
    """Whether :func:`triton_ssd_step` takes these tensors (unit innermost strides, head count a multiple of groups)."""
    return (state.stride(-1) == 1 and x.stride(-1) == 1 and dt.stride(-1) == 1 and B.stride(-1) == 1
            and C.stride(-1) == 1 and B.shape[1] == C.shape[1] and state.shape[1] % B.shape[1] == 0)


def supports_conv_step(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`triton_conv_step` takes these tensors (width >= 2, unit channel stride of ``x``)."""
    return weight.shape[1] >= 2 and x.stride(-1) == 1
