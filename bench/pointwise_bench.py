"""How to compile the prefill's pointwise functions: eager vs ``dynamic=True`` vs the library's way.

    python bench/pointwise_bench.py --out pointwise.json

Each function of :mod:`thinkfast.models.pointwise` (and, for comparison, a rotary embedding that computes
its cos/sin per element instead of taking tables) is timed alone on the shapes a prefill of ``--prompts``
x ``--length`` tokens of a Llama-3.2-1B-sized model gives it (hidden 2048, MLP 8192, 32 heads of 64, bf16):

- ``eager``: the function's eager code;
- ``dynamic``: ``torch.compile(fn, dynamic=True)``, every dimension symbolic;
- ``library``: the :class:`~thinkfast.models.pointwise.Pointwise` call inside ``pointwise.compiled()``,
  which fixes the feature dimensions and marks the token dimensions dynamic.

For the compiled ones the first calls (which compile) are timed on the host, on four shapes in turn
(1 x 200, 2 x 137, the timed shape, 3 x 77 tokens); then device milliseconds per call over ``--repeats``
calls of the timed shape, and host microseconds per call of a small shape (2 x 137 tokens, where the
host's cost of a call decides). A diagnosis tool for ``docs/performance.md``; it changes nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from thinkfast.models import pointwise

HIDDEN, INTERMEDIATE, HEADS, HEAD_DIM = 2048, 8192, 32, 64
FIRST_SHAPES = [(1, 200), (2, 137), None, (3, 77)]  # None: the timed shape


def rotary_per_element(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """The rotary embedding as one function of the positions (cos/sin computed for every element)."""
    return pointwise.apply_rotary.eager(x, *pointwise.rotary_tables(positions, inv_freq, x.dtype))


def inputs(name: str, prompts: int, length: int, device: torch.device, dtype: torch.dtype) -> tuple:
    """Arguments of ``name`` for ``prompts`` x ``length`` tokens."""
    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    tokens = (prompts, length)
    if name == "rms_norm":
        return rand(*tokens, HIDDEN), rand(HIDDEN), 1e-5
    if name == "silu_mul":
        return rand(*tokens, INTERMEDIATE), rand(*tokens, INTERMEDIATE)
    if name == "gated_rms_norm":  # z is a column slice of the in_proj output, as in the SSM mixer
        return rand(*tokens, HIDDEN), rand(*tokens, 2 * HIDDEN + 104)[..., :HIDDEN], rand(HIDDEN), 1e-5
    inv_freq = 1.0 / (500000 ** (torch.arange(0, HEAD_DIM, 2, device=device).float() / HEAD_DIM))
    positions = torch.arange(length, device=device)[None].expand(prompts, length)
    x = rand(*tokens, HEADS, HEAD_DIM)
    if name == "rotary_per_element":
        return x, positions, inv_freq
    return (x, *pointwise.rotary_tables(positions, inv_freq, dtype))


def device_ms(fn: Callable, args: tuple, repeats: int) -> float:
    """Device milliseconds per call of ``fn(*args)`` over ``repeats`` back-to-back calls."""
    fn(*args)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn(*args)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def first_calls(fn: Callable, name: str, timed: tuple[int, int], device, dtype) -> list[float]:
    """Host seconds of the first calls on :data:`FIRST_SHAPES` (where compilation happens)."""
    seconds = []
    for shape in FIRST_SHAPES:
        args = inputs(name, *(shape or timed), device, dtype)
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*args)
        torch.cuda.synchronize()
        seconds.append(round(time.perf_counter() - start, 3))
    return seconds


def variants(name: str) -> dict[str, Callable]:
    """``eager``, ``dynamic`` and (for the library's functions) ``library`` callables of ``name``."""
    if name == "rotary_per_element":
        eager = rotary_per_element
        library = pointwise.Pointwise(rotary_per_element, feature_dims=2)
    else:
        library = getattr(pointwise, name)
        eager = library.eager
    library._compiled, library.error = None, None  # compile afresh in this process

    def in_context(*args):
        with pointwise.compiled():
            return library(*args)

    return {"eager": eager, "dynamic": torch.compile(eager, dynamic=True), "library": in_context}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    device, dtype = torch.device("cuda"), torch.bfloat16
    timed = (args.prompts, args.length)
    results = {}
    with torch.no_grad():
        for name in ("rms_norm", "silu_mul", "gated_rms_norm", "rotary_per_element", "apply_rotary"):
            torch._dynamo.reset()
            row = {}
            for variant, fn in variants(name).items():
                cell = {}
                if variant != "eager":
                    cell["first_calls_s"] = first_calls(fn, name, timed, device, dtype)
                cell["device_ms"] = device_ms(fn, inputs(name, *timed, device, dtype), args.repeats)
                cell["small_call_us"] = 1e3 * device_ms(fn, inputs(name, 2, 137, device, dtype), 200)
                row[variant] = cell
            results[name] = row
            print(f"{name:20s} " + "  ".join(
                f"{v}: {c['device_ms']:.3f} ms, small {c['small_call_us']:.0f} us"
                + (f", first calls {c['first_calls_s']} s" if "first_calls_s" in c else "") for v, c in row.items()))
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "prompts": args.prompts,
                                        "length": args.length, "results": results}, indent=1))


if __name__ == "__main__":
    main()
