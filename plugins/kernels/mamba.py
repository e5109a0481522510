"""``mamba-ssm``: the Triton SSD kernels of mamba-ssm and the CUDA conv kernels of causal-conv1d (lazy imports).

Where these kernels lack a feature the reference kernel runs instead (documented in docs/models.md):
conv widths other than 2-4, a conv that is given both ``seq_idx`` and an initial state, and a packed or
stateful conv whose channel count is not a multiple of 8.
"""

from __future__ import annotations

import torch

from thinkfast.kernels import KernelSet
from thinkfast.kernels import reference as ref
from thinkfast.kernels.base import cuda_module_unavailable


def _channel_last(x: torch.Tensor) -> torch.Tensor | None:
    """``x`` (B, L, D) as a (B, D, L) view with the channel-last strides causal-conv1d requires.

    The kernel wants ``stride(1) == 1`` and the batch and position strides multiples of 8. ``x`` is
    returned transposed if it qualifies (a slice of a wider projection often does not), else copied
    into a fresh (B, L, D) buffer, whose strides are canonical even for size-1 dimensions (which
    ``contiguous()`` leaves as they were). None where D is not a multiple of 8: no such layout exists.
    """
    xt = x.transpose(1, 2)
    if xt.stride(1) == 1 and xt.stride(0) % 8 == 0 and xt.stride(2) % 8 == 0:
        return xt
    if x.shape[2] % 8:
        return None
    return torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(x).transpose(1, 2)


class MambaSsmKernels(KernelSet):
    """SSD chunk scan / step (mamba_ssm) and causal conv1d / step (causal_conv1d); CUDA only."""

    name = "mamba-ssm"
    operations = ("ssm", "conv")

    @classmethod
    def availability(cls, device: torch.device, operation: str | None = None) -> str | None:
        modules = {"ssm": ["mamba_ssm.ops.triton.ssd_combined", "mamba_ssm.ops.triton.selective_state_update"],
                   "conv": ["causal_conv1d"]}
        wanted = modules.get(operation, []) if operation else [m for ms in modules.values() for m in ms]
        return cuda_module_unavailable(device, *wanted)

    @classmethod
    def priority(cls, operation: str, device: torch.device) -> int:
        return 20

    def ssd_chunk_scan(self, x, dt, A, B, C, *, chunk_size, D=None, dt_bias=None, initial_state=None,
                       seq_idx=None):
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        y, final_state = mamba_chunk_scan_combined(
            x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, initial_states=initial_state,
            seq_idx=seq_idx.to(torch.int32).contiguous() if seq_idx is not None else None,
            dt_softplus=True, return_final_states=True)
        return y, final_state

    def ssd_step(self, state, x, dt, A, B, C, *, D=None, dt_bias=None):
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update

        _, heads, headdim, dstate = state.shape
        # stride-0 expansions select the kernel's tied-head-dim fast path (as mamba_ssm's Mamba2.step)
        y = selective_state_update(
            state, x, dt[:, :, None].expand(-1, heads, headdim),
            A.float()[:, None, None].expand(heads, headdim, dstate), B, C,
            D=D[:, None].expand(heads, headdim) if D is not None else None,
            dt_bias=dt_bias[:, None].expand(heads, headdim) if dt_bias is not None else None,
            dt_softplus=True)
        return y

    def causal_conv1d(self, x, weight, bias=None, *, activation=None, initial_state=None, seq_idx=None):
        width = weight.shape[1]
        if not 2 <= width <= 4 or (seq_idx is not None and initial_state is not None):
            return ref.causal_conv1d(x, weight, bias, activation=activation, initial_state=initial_state,
                                     seq_idx=seq_idx)
        from causal_conv1d import causal_conv1d_fn

        xt = _channel_last(x)
        if xt is None:  # no channel-last layout exists; channel-first serves only a stateless, unpacked call
            if seq_idx is not None or initial_state is not None:
                return ref.causal_conv1d(x, weight, bias, activation=activation, initial_state=initial_state,
                                         seq_idx=seq_idx)
            xt = x.transpose(1, 2).contiguous()
        act = "silu" if activation == "silu" else None
        if seq_idx is not None:
            y = causal_conv1d_fn(xt, weight.contiguous(), bias, seq_idx=seq_idx.to(torch.int32).contiguous(),
                                 activation=act)
            return y.transpose(1, 2), None
        if initial_state is not None:  # the kernel wants the state channel-last too
            initial_state = initial_state.transpose(1, 2).contiguous().transpose(1, 2)
        y = causal_conv1d_fn(xt, weight.contiguous(), bias, initial_states=initial_state, activation=act)
        # The final state is the last (width - 1) inputs. Slicing it here (rather than asking the kernel
        # for it) keeps it differentiable with respect to x and initial_state.
        history = xt if initial_state is None else torch.cat([initial_state.to(xt.dtype), xt], dim=-1)
        if history.shape[-1] < width - 1:
            history = torch.nn.functional.pad(history, (width - 1 - history.shape[-1], 0))
        final_state = history[..., -(width - 1):].contiguous()
        return y.transpose(1, 2), final_state

    def causal_conv1d_step(self, x, conv_state, weight, bias=None, *, activation=None):
        width = weight.shape[1]
        if not 2 <= width <= 4:
            return ref.causal_conv1d_step(x, conv_state, weight, bias, activation=activation)
        from causal_conv1d import causal_conv1d_update

        return causal_conv1d_update(x, conv_state, weight.contiguous(), bias,
                                    "silu" if activation == "silu" else None)
