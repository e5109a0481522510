"""The elementwise work of a block, defined once, and run as compiled kernels inside a prefill.

Eager PyTorch runs an RMSNorm as about seven kernels, each reading and writing a ``(tokens, hidden)``
tensor (some in float32), SwiGLU's gate as two, a rotary embedding as about a dozen. In a decode step
that work is small and the compiled step fuses it anyway; in a prefill of ``P x L`` tokens it is a
quarter of the time (a 64 x 512-token prefill of a 1B model moves tens of GB through it). The functions
here are the only definitions of that math (the modules call them). Inside :func:`compiled` (which
``ThinkfastLM.prefill`` enters when :meth:`~thinkfast.models.model.ThinkfastLM.compile_pointwise` is on)
each call on a CUDA tensor with gradients off runs as one ``torch.compile`` kernel instead: compiled at
its first use, generic in the token dimensions (not once per prompt length; see :class:`Pointwise`),
same math, intermediates kept in float32 where the eager code rounds to the model dtype (bf16 noise).
Anywhere else (CPU, training, a step being traced by ``torch.compile``) the eager code runs. A function
whose compilation fails runs eagerly from then on; :func:`compile_errors` says why. The modules call
these functions, not their submodules: hooks on an SSM mixer's ``norm`` or an attention layer's
``rotary`` do not fire.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F

from thinkfast.compile_limits import raise_recompile_limits

_COMPILED: ContextVar[bool] = ContextVar("thinkfast_compiled_pointwise", default=False)


@contextlib.contextmanager
def compiled(enabled: bool = True) -> Iterator[None]:
    """Within the block, pointwise functions called on CUDA tensors with gradients off run compiled."""
    token = _COMPILED.set(enabled)
    try:
        yield
    finally:
        _COMPILED.reset(token)


#: Smallest prefill (tokens x hidden size) that ``ThinkfastLM.prefill`` runs with compiled pointwise work.
#: A compiled call costs the host 60-90 us, more than the eager kernels it replaces when they are small;
#: that pays where the device is the bottleneck (Llama-3.2-1B: 64 x 512 tokens, 67M elements, 1.2-1.3x
#: faster), not where the host is (Llamba-135M: 64 x 512 tokens, 19M elements, 1.15x slower).
MIN_PREFILL_ELEMENTS = 1 << 25


#: Every :class:`Pointwise` function, by name (for :func:`compile_errors`).
REGISTRY: dict[str, Pointwise] = {}


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _first_lines(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` from the first two non-empty lines (dynamo's first line often only names the backend)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {' '.join(lines[:2])}"[:limit]


class Pointwise:
    """An elementwise function that runs eagerly, or compiled inside :func:`compiled` (see the module).

    ``feature_dims``: how many trailing dims of its tensor arguments are features (hidden size, heads,
    head size). The compiled kernel is specialised to those (marked static) and generic in the leading
    (token) dims (marked dynamic), so one compilation serves every prompt count and length of a model;
    a single prompt (batch dim 1, which dynamo specialises), another head count (``k`` after ``q``), an
    argument that is None or another dtype each get their own.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], feature_dims: int = 1):
        functools.update_wrapper(self, fn)
        self.eager = fn
        self.feature_dims = feature_dims
        self._compiled: Callable[..., torch.Tensor] | None = None
        self.error: str | None = None  # why compiling failed, if it did
        REGISTRY[fn.__name__] = self

    def _use_compiled(self, x: torch.Tensor) -> bool:
        return self.error is None and _COMPILED.get() and x.is_cuda and not torch.is_grad_enabled()

    def _mark_dims(self, args: tuple) -> None:
        """Token dims dynamic, feature dims static, on the activations only: parameters are static to
        dynamo anyway, and a marking on them would fail the guards of the compiled decode step that
        uses the same parameters (it was compiled before they were marked), which then recompiles. A view
        (``q``/``k`` of one fused GEMM, the SSM gate) has its base's token dims marked too: dynamo guards
        the base's sizes, and would otherwise fix the prompt length through them."""
        for t in args:
            if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter):
                tokens = max(t.ndim - self.feature_dims, 0)
                for dim in range(t.ndim):
                    if dim < tokens:
                        torch._dynamo.maybe_mark_dynamic(t, dim)
                    else:
                        torch._dynamo.mark_static(t, dim)
                base = t._base
                if base is not None and not isinstance(base, torch.nn.Parameter) and base.ndim >= tokens:
                    for dim in range(tokens):
                        torch._dynamo.maybe_mark_dynamic(base, dim)

    def __call__(self, x: torch.Tensor, *args) -> torch.Tensor:
        # first, and alone: a step being traced by torch.compile inlines the eager code (dynamo cannot
        # trace the context variable, so any other check first would break the step's graph)
        if torch.compiler.is_compiling() or not self._use_compiled(x):
            return self.eager(x, *args)
        if self._compiled is None:
            raise_recompile_limits()  # past them dynamo raises, and this function runs eagerly from then on
            self._compiled = torch.compile(self.eager, dynamic=None)
        self._mark_dims((x, *args))
        try:
            return self._compiled(x, *args)
        except Exception as exc:
            if _is_out_of_memory(exc):
                raise
            out = self.eager(x, *args)  # an error of the call itself raises here, and compiling stays on
            self.error = _first_lines(exc)  # a compiler failure: this function runs eagerly from now on
            return out


def pointwise(feature_dims: int = 1) -> Callable[[Callable[..., torch.Tensor]], Pointwise]:
    """Decorator: ``fn`` as a :class:`Pointwise` with ``feature_dims`` trailing feature dims."""
    return lambda fn: Pointwise(fn, feature_dims)


def compile_errors() -> dict[str, str]:
    """Name -> why compiling it failed, for the pointwise functions whose compilation failed in this
    process (they run eagerly from then on, for every model)."""
    return {name: f.error for name, f in REGISTRY.items() if f.error}


@pointwise()
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dim, in float32, rounded to ``x.dtype`` before
    the weight (as Hugging Face Llama). ``x`` ``(..., dim)``, ``weight`` ``(dim,)`` -> ``(..., dim)``."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


@pointwise()
def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's gate: ``silu(gate) * up``, both ``(..., intermediate)``."""
    return F.silu(gate) * up


@pointwise()
def gated_rms_norm(y: torch.Tensor, z: torch.Tensor | None, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """The SSM mixer's output gate and norm: ``y * silu(z)`` (``z`` None: ``y``), then :func:`rms_norm`
    with ``weight`` (None: no norm). ``y``, ``z`` ``(..., inner)`` -> ``(..., inner)``."""
    if z is not None:
        y = y * F.silu(z)
    return rms_norm.eager(y, weight, eps) if weight is not None else y


def rotary_tables(positions: torch.Tensor, inv_freq: torch.Tensor,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama's rotary ``cos`` and ``sin`` ``(..., seq, 1, head_dim)`` in ``dtype`` for ``positions``
    ``(..., seq)`` and ``inv_freq`` ``(head_dim / 2,)`` float32 (computed in float32, then rounded)."""
    freqs = positions.float()[..., None] * inv_freq  # (..., seq, head_dim / 2)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype)[..., None, :], emb.sin().to(dtype)[..., None, :]


@pointwise(feature_dims=2)
def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``(..., seq, heads, head_dim)`` by :func:`rotary_tables` ``cos``/``sin`` (broadcast over
    heads): the rotate-half form of Llama."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
