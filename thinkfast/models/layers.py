"""Small building blocks shared by every model kind: RMSNorm, SwiGLU MLP, rotary embeddings (incl. Llama-3)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from thinkfast.errors import ModelLoadError
from thinkfast.models import pointwise


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dim, computed in float32 (as Hugging Face Llama)."""

    def __init__(self, dim: int, eps: float = 1e-5, *, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., dim)`` -> same shape and dtype (:func:`~thinkfast.models.pointwise.rms_norm`)."""
        return pointwise.rms_norm(x, self.weight, self.eps)


class SwiGLU(nn.Module):
    """Llama MLP: ``down(silu(gate(x)) * up(x))``; ``(..., hidden) -> (..., hidden)``."""

    def __init__(self, hidden: int, intermediate: int, bias: bool = False, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.gate_proj = nn.Linear(hidden, intermediate, bias=bias, **kw)
        self.up_proj = nn.Linear(hidden, intermediate, bias=bias, **kw)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(pointwise.silu_mul(self.gate_proj(x), self.up_proj(x)))


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    """Inverse frequencies ``(head_dim // 2,)`` float32, as transformers computes them.

    Supports ``rope_type`` ``default``, ``linear`` and ``llama3`` (Llama-3.1/3.2 frequency smoothing);
    anything else raises :class:`ModelLoadError`.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise ModelLoadError(f"rope_scaling type {rope_type!r} is not supported (use default, linear or llama3)")


class RotaryEmbedding(nn.Module):
    """Rotary position embedding; the inverse frequencies stay float32 whatever the model dtype."""

    def __init__(self, head_dim: int, theta: float, scaling: dict[str, Any] | None, *, device=None):
        super().__init__()
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        inv_freq = rope_inverse_frequencies(head_dim, theta, scaling)
        self.register_buffer("inv_freq", inv_freq.to(device) if device is not None else inv_freq, persistent=False)

    def _apply(self, fn, recurse: bool = True):  # keep inv_freq float32 across .to(dtype)
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32 and self.inv_freq.device.type != "meta":
            fresh = rope_inverse_frequencies(self.head_dim, self.theta, self.scaling)
            self.inv_freq = fresh.to(self.inv_freq.device)
        return self

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``(..., seq, heads, head_dim)`` by ``positions`` (broadcastable to ``(..., seq)``)."""
        return pointwise.apply_rotary(x, *self.tables(positions, x.dtype))

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos``, ``sin`` ``(..., seq, 1, head_dim)`` in ``dtype`` for ``positions`` ``(..., seq)``, to rotate
        several tensors at the same positions with :func:`~thinkfast.models.pointwise.apply_rotary`."""
        return pointwise.rotary_tables(positions, self.inv_freq, dtype)
