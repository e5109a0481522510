"""Multi-head Mamba-2 (SSD) mixer, shaped so that it can be initialised from an attention layer.

Per token the in-projection ``in_proj`` produces, in this order::

    [z (inner, only with gate) | x (num_x_heads * head_dim) | B (num_b_groups * state_size)
     | C (num_c_groups * state_size) | dt (num_heads)]

``[x, B, C]`` go through an optional causal depthwise conv and the activation; ``x`` heads and ``B``/``C``
groups are repeated GQA-style to ``num_heads``; the SSD scan (``A = -exp(A_log)``, ``dt = softplus(dt +
dt_bias)``, skip ``D``) mixes over time; then optional gate/norm and ``out_proj``. With ``x <- W_v``,
``B <- W_k``, ``C <- W_q`` and ``out_proj <- W_o`` this is linear attention with a learned decay.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from thinkfast.kernels import Kernels
from thinkfast.kernels.reference import expand_groups
from thinkfast.models import pointwise
from thinkfast.models.cache import SSMCache, write_slots
from thinkfast.models.config import ModelConfig, SSMConfig
from thinkfast.models.fused import FusedLinear, refuse
from thinkfast.models.layers import RMSNorm


class SSMMixer(nn.Module):
    """Mamba-2 mixer ``(B, L, hidden) -> (B, L, hidden)``; takes the *normed* block input."""

    def __init__(self, config: ModelConfig, *, device=None, dtype=None):
        super().__init__()
        assert config.ssm is not None
        s: SSMConfig = config.ssm
        self.cfg = s
        kw = {"device": device, "dtype": dtype}
        self.sizes = {
            "z": s.inner_size if s.gate else 0,
            "x": s.num_x_heads * s.head_dim,
            "B": s.num_b_groups * s.state_size,
            "C": s.num_c_groups * s.state_size,
            "dt": s.num_heads,
        }
        self.in_proj = nn.Linear(config.hidden_size, sum(self.sizes.values()), bias=s.proj_bias, **kw)
        if s.conv_kernel > 0:
            self.conv_weight = nn.Parameter(torch.empty(s.conv_dim, s.conv_kernel, **kw))
            self.conv_bias = nn.Parameter(torch.zeros(s.conv_dim, **kw)) if s.conv_bias else None
        self.A_log = nn.Parameter(torch.empty(s.num_heads, **kw))
        self.dt_bias = nn.Parameter(torch.empty(s.num_heads, **kw))
        self.D = nn.Parameter(torch.ones(s.num_heads, **kw))
        self.norm = RMSNorm(s.inner_size, eps=config.rms_norm_eps, **kw) if s.norm else None
        self.out_proj = nn.Linear(s.inner_size, config.hidden_size, bias=s.proj_bias, **kw)
        self.kernels = Kernels.reference()
        self.padded_in_proj: FusedLinear | None = None  # see fuse_projections
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, a_range: tuple[float, float] = (1.0, 16.0), dt_range: tuple[float, float] = (
            1e-3, 1e-1), conv_init: str = "random") -> None:
        """Mamba-2 defaults: ``A = -U(a_range)`` per head (stored as ``A_log``), ``dt`` log-uniform in
        ``dt_range`` (stored as ``dt_bias = softplus^-1(dt)``), ``D = 1``; conv ``random`` (PyTorch Conv1d
        default, uniform +-1/sqrt(width)) or ``delta`` (identity: last tap 1, others 0, bias 0)."""
        if self.A_log.device.type == "meta":
            return
        self.A_log.copy_(torch.empty_like(self.A_log, dtype=torch.float32).uniform_(*a_range).log())
        lo, hi = math.log(dt_range[0]), math.log(dt_range[1])
        dt = torch.exp(torch.rand_like(self.dt_bias, dtype=torch.float32) * (hi - lo) + lo).clamp(min=1e-4)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.D.fill_(1.0)
        if self.cfg.conv_kernel > 0:
            if conv_init == "delta":
                self.conv_weight.zero_()
                self.conv_weight[:, -1] = 1.0
            else:
                bound = 1.0 / math.sqrt(self.cfg.conv_kernel)
                self.conv_weight.uniform_(-bound, bound)
            if self.conv_bias is not None:
                self.conv_bias.zero_()

    # --- pieces ----------------------------------------------------------------------------
    def in_proj_slices(self) -> dict[str, slice]:
        """Row ranges of ``in_proj.weight`` holding ``z``, ``x``, ``B``, ``C`` and ``dt``."""
        out, start = {}, 0
        for name, size in self.sizes.items():
            out[name] = slice(start, start + size)
            start += size
        return out

    def conv_slices(self) -> dict[str, slice]:
        """Channel ranges of the conv (``conv_weight`` rows) holding ``x``, ``B`` and ``C``."""
        sx, sb = self.sizes["x"], self.sizes["B"]
        return {"x": slice(0, sx), "B": slice(sx, sx + sb), "C": slice(sx + sb, sx + sb + self.sizes["C"])}

    @property
    def A(self) -> torch.Tensor:
        """Per-head decay rate ``(num_heads,)`` float32, negative."""
        return -torch.exp(self.A_log.float())

    def _activate(self, xbc: torch.Tensor) -> torch.Tensor:
        return F.silu(xbc) if self.cfg.activation == "silu" else xbc

    def _split_xbc(self, xbc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(..., conv_dim)`` -> x ``(..., num_heads, head_dim)``, B/C ``(..., groups, state_size)``."""
        s = self.cfg
        x, B, C = torch.split(xbc, [self.sizes["x"], self.sizes["B"], self.sizes["C"]], dim=-1)
        x = expand_groups(x.unflatten(-1, (s.num_x_heads, s.head_dim)), s.num_heads)
        B = B.unflatten(-1, (s.num_b_groups, s.state_size))
        C = C.unflatten(-1, (s.num_c_groups, s.state_size))
        if s.num_b_groups != s.num_c_groups:  # kernels take one group count for B and C
            B, C = expand_groups(B, s.num_heads), expand_groups(C, s.num_heads)
        return x, B, C

    def fuse_projections(self, multiple: int) -> None:
        """``prefill`` and ``step`` compute ``in_proj`` (with gradients off) with its output padded to a
        multiple of ``multiple`` columns (:class:`~thinkfast.models.fused.FusedLinear` of one linear): the
        split ``z``/``xBC``/``dt`` are then views whose rows start aligned, which cuBLAS needs for its fast
        kernels. Nothing to do when the width already is a multiple; a padding still current is kept."""
        odd = self.in_proj.out_features % max(multiple, 1) > 0
        self.padded_in_proj = refuse(self.padded_in_proj, [self.in_proj], multiple) if odd else None

    def unfuse_projections(self) -> None:
        self.padded_in_proj = None

    def _project(self, u: torch.Tensor, fused: bool = False) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """``u`` ``(..., D)`` -> ``z`` ``(..., inner)`` | None, ``xBC`` ``(..., conv_dim)``, ``dt`` ``(..., H)``;
        ``fused`` (the inference paths): through :attr:`padded_in_proj` when there is one and gradients are off."""
        if fused and self.padded_in_proj is not None and not torch.is_grad_enabled():
            (zxbcdt,) = self.padded_in_proj(u)
        else:
            zxbcdt = self.in_proj(u)
        z, xbc, dt = torch.split(zxbcdt, [self.sizes["z"], self.cfg.conv_dim, self.sizes["dt"]], dim=-1)
        return (z if self.cfg.gate else None), xbc, dt

    def _output(self, y: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """``y`` ``(..., num_heads, head_dim)`` -> gate / norm -> ``out_proj`` -> ``(..., hidden)``."""
        norm = self.norm
        weight, eps = (norm.weight, norm.eps) if norm is not None else (None, 0.0)
        y = pointwise.gated_rms_norm(y.flatten(-2), z, weight, eps)
        return self.out_proj(y)

    def _conv(self, xbc: torch.Tensor, seq_idx: torch.Tensor | None = None,
              initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.cfg.conv_kernel == 0:
            return self._activate(xbc), None
        return self.kernels.conv.causal_conv1d(
            xbc, self.conv_weight, self.conv_bias, activation=self.cfg.activation if self.cfg.activation == "silu"
            else None, initial_state=initial_state, seq_idx=seq_idx)

    def _scan(self, x, dt, B, C, seq_idx=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.kernels.ssm.ssd_chunk_scan(
            x, dt, self.A, B, C, chunk_size=self.cfg.chunk_size, D=self.D, dt_bias=self.dt_bias, seq_idx=seq_idx)

    # --- full sequences --------------------------------------------------------------------
    def forward(self, u: torch.Tensor, seq_idx: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``u`` ``(B, L, hidden)`` normed input, ``seq_idx`` ``(B, L)`` segment index -> ``(B, L, hidden)``."""
        z, xbc, dt = self._project(u)
        xbc, _ = self._conv(xbc, seq_idx)
        x, B, C = self._split_xbc(xbc)
        y, _ = self._scan(x, dt, B, C, seq_idx)
        return self._output(y, z)

    def mixing_matrix(self, u: torch.Tensor, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Materialised SSD matrix ``(B, H, L, L)`` float32 for the normed input ``u`` ``(B, L, hidden)``.

        ``M[i, j] = (C_i . B_j) * exp(sum_{k=j+1..i} dt_k A) * dt_j`` for ``j <= i`` (same document), 0
        otherwise: what multiplies ``x_j`` to give ``y_i`` (the ``D`` skip excluded).
        """
        _, xbc, dt = self._project(u)
        xbc, _ = self._conv(xbc, seq_idx)
        _, B, C = self._split_xbc(xbc)
        H = self.cfg.num_heads
        Bh, Ch = expand_groups(B, H).float(), expand_groups(C, H).float()  # (b, l, h, n)
        dt = F.softplus(dt.float() + self.dt_bias.float())  # (b, l, h)
        cs = torch.cumsum(dt * self.A, dim=1).transpose(1, 2)  # (b, h, l)
        seg = cs[..., :, None] - cs[..., None, :]  # (b, h, i, j)
        length = u.shape[1]
        keep = torch.ones(length, length, dtype=torch.bool, device=u.device).tril()
        if seq_idx is not None:
            keep = keep & (seq_idx[:, :, None] == seq_idx[:, None, :])[:, None]
        decay = torch.exp(seg.masked_fill(~keep, -math.inf))
        return torch.einsum("bihn,bjhn->bhij", Ch, Bh) * decay * dt.transpose(1, 2)[:, :, None, :]

    # --- inference -------------------------------------------------------------------------
    def allocate_cache(self, batch_size: int, max_seqlen: int, *, dtype: torch.dtype,
                       state_dtype: torch.dtype, device: torch.device) -> SSMCache:
        s = self.cfg
        # (B, conv_dim, K - 1) with the channels contiguous: a decode step reads and writes each window
        # column as one vector (the triton and causal-conv1d conv steps take any strides)
        conv = (torch.zeros(batch_size, s.conv_kernel - 1, s.conv_dim, dtype=dtype, device=device).transpose(1, 2)
                if s.conv_kernel > 0 else None)
        ssm = torch.zeros(batch_size, s.num_heads, s.head_dim, s.state_size, dtype=state_dtype, device=device)
        return SSMCache(conv_state=conv, ssm_state=ssm)

    def prefill(self, u: torch.Tensor, cache: SSMCache, slots: torch.Tensor, rows: torch.Tensor | None = None,
                seq_idx: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Prompts ``u`` ``(P, L, hidden)`` -> ``(P, L, hidden)``; prompt ``rows[i]``'s final conv/SSM state
        goes to ``cache[slots[i]]`` (``slots``, ``rows``: ``(S,)`` long; ``rows=None``: ``P == 1``, every slot).

        Left-padded prompts come with ``seq_idx`` ``(P, L)`` (padding and prompt are separate segments,
        so no state crosses from the padding into the prompt); ``position_ids`` is unused.
        """
        z, xbc_in, dt = self._project(u, fused=True)
        xbc, conv_state = self._conv(xbc_in, seq_idx)
        x, B, C = self._split_xbc(xbc)
        y, ssm_state = self._scan(x, dt, B, C, seq_idx)
        if cache.conv_state is not None:
            if seq_idx is not None:  # kernels may not return it with seq_idx; it is the last inputs anyway
                conv_state = self._last_conv_inputs(xbc_in, seq_idx)
            write_slots(cache.conv_state, slots, conv_state, rows)
        write_slots(cache.ssm_state, slots, ssm_state, rows)
        return self._output(y, z)

    def _last_conv_inputs(self, xbc: torch.Tensor, seq_idx: torch.Tensor) -> torch.Tensor:
        """Conv state after the last token: the last ``conv_kernel - 1`` inputs of each row's last segment,
        oldest first, zeros before the segment starts. ``xbc`` ``(P, L, conv_dim)`` -> ``(P, conv_dim, K - 1)``."""
        width = self.cfg.conv_kernel - 1
        if width == 0:
            return xbc.new_zeros(xbc.shape[0], xbc.shape[2], 0)
        pad = max(width - xbc.shape[1], 0)
        tail = F.pad(xbc, (0, 0, pad, 0))[:, -width:]  # (P, K - 1, conv_dim)
        seg = F.pad(seq_idx, (pad, 0), value=-1)[:, -width:]  # (P, K - 1)
        keep = (seg == seq_idx[:, -1:]).to(tail.dtype)
        return (tail * keep[..., None]).transpose(1, 2)

    def step(self, u: torch.Tensor, positions: torch.Tensor, cache: SSMCache) -> torch.Tensor:
        """One token per slot: ``u`` ``(B, hidden)`` -> ``(B, hidden)``; updates ``cache`` in place."""
        z, xbc, dt = self._project(u, fused=True)
        if cache.conv_state is not None:
            xbc = self.kernels.conv.causal_conv1d_step(
                xbc, cache.conv_state, self.conv_weight, self.conv_bias,
                activation="silu" if self.cfg.activation == "silu" else None)
        else:
            xbc = self._activate(xbc)
        x, B, C = self._split_xbc(xbc)
        y = self.kernels.ssm.ssd_step(cache.ssm_state, x, dt, self.A, B, C, D=self.D, dt_bias=self.dt_bias)
        return self._output(y, z)
