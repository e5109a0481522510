"""Triton kernels defined on first use and kept where ``torch.compile`` can see them.

A ``@triton.jit`` function can only be defined once Triton imports, which a CPU-only machine need not
allow, so the kernel modules define theirs inside functions. How the defined kernel is then found matters
under ``torch.compile``: dynamo traces through a ``functools.lru_cache`` wrapper into the defining
function, cannot trace Triton's decorator, and breaks the graph at every launch (two breaks per Mamba
layer in a decode step). Looking the kernel up in a module-level dict is traceable once it is defined,
and dynamo then captures the launch as a user-defined Triton kernel inside the graph. :func:`define`
defines a kernel set's kernels ahead of any compilation (the ``triton`` kernel set calls it when it
reports itself available).
"""

from __future__ import annotations

from collections.abc import Callable

_DEFINED: dict[str, object] = {}


def lazy_kernel(name: str, define: Callable[[], object]) -> object:
    """The kernel stored under ``name``, defined by ``define()`` (which imports Triton) on first use."""
    kernel = _DEFINED.get(name)
    if kernel is None:
        kernel = _DEFINED[name] = define()
    return kernel


def define(*kernels: Callable[[], object]) -> None:
    """Call each kernel getter once, so that the kernels exist before a step that launches them is traced."""
    for kernel in kernels:
        kernel()
