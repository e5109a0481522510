"""Where a refill's prefill spends its time: wall milliseconds per ``model.prefill`` call, new and repeated shapes.

    python bench/prefill_profile.py --shapes smollm2-135m,llamba-135m --out prefill.json

The engine refills free decode slots by prefilling a pending prompt once and copying its state into
the slots (:meth:`thinkfast.generate.engine.Engine._start`). This times that call as the engine makes
it without prefill buckets (``prefill_bucket = 1``; random weights, kernels chosen by "auto", a cache
of ``--batch`` slots): ``--calls`` prompts
of random lengths in ``--prompt`` (each into ``--slots`` slots; every other call two left-padded prompts,
as :func:`~thinkfast.generate.scheduler.plan_prefills` groups them), then the same ``--calls`` lengths
again (shapes already seen), each call timed on the host after a device sync. A call much slower the
first time a length appears points at per-shape work (Triton specialisation, autotuning); slow repeated
calls point at the work itself, which the torch profiler's table (CPU and CUDA time by operator, one
repeated call) then breaks down. A diagnosis tool for ``docs/performance.md``; it changes nothing.

    python bench/prefill_profile.py --grid 64,512 --shapes llamba-1b,llama-3.2-1b [--compile-pointwise]

``--grid P,L`` times instead one prefill of ``P`` equal prompts of ``L`` tokens, one slot each (how a fixed
batch starts; fused projections as the engine has them). ``--compile-pointwise`` runs the prefill's norms,
gates and rotary embeddings as compiled kernels (:mod:`thinkfast.models.pointwise`), as ``generate`` does
with ``compile`` on; the first call, outside the timing in ``--grid`` mode, compiles them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from thinkfast.devices import DTYPES
from thinkfast.kernels import select_kernels
from thinkfast.profile.shapes import build_shape


def timed_call(fn) -> float:
    """Wall milliseconds of one ``fn()`` between device syncs."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start)


def operator_table(fn, top: int) -> list[dict]:
    """Self CPU and CUDA microseconds per operator name over one call of ``fn``, by total, largest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = []
    for evt in prof.key_averages():
        device_us = getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0)
        rows.append({"op": evt.key[:80], "calls": evt.count, "self_cpu_us": evt.self_cpu_time_total,
                     "self_cuda_us": device_us})
    rows.sort(key=lambda r: -(r["self_cpu_us"] + r["self_cuda_us"]))
    return rows[:top]


def profile_shape(shape: str, args: argparse.Namespace) -> dict:
    device = torch.device("cuda", torch.cuda.current_device())
    dtype = DTYPES[args.dtype]
    model = build_shape(shape, device, dtype).eval()
    model.set_kernels(select_kernels(None, device)).compile_pointwise(args.compile_pointwise)
    low, high = (int(v) for v in args.prompt.split(","))
    cache = model.allocate_cache(args.batch, high + 8, dtype=dtype, state_dtype=DTYPES[args.state_dtype])
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(low, high + 1, (args.calls, 2), generator=gen).tolist()

    def call(pair: list[int], two: bool):
        slots = torch.arange(args.slots, device=device)
        if not two:
            ids = torch.randint(16, vocab, (pair[0],), device=device)
            return lambda: model.prefill(ids, cache, slots)
        longest = max(pair)
        ids = torch.randint(16, vocab, (2, longest), device=device)
        rows = (torch.arange(args.slots, device=device) >= args.slots // 2).long()
        lens = torch.tensor(pair, device=device)
        return lambda: model.prefill(ids, cache, slots, rows, lens)

    with torch.no_grad():
        first = [timed_call(call(pair, i % 2 == 1)) for i, pair in enumerate(lengths)]
        again = [timed_call(call(pair, i % 2 == 1)) for i, pair in enumerate(lengths)]
        table = operator_table(call(lengths[0], False), args.top)
    result = {"shape": shape, "compile_pointwise": args.compile_pointwise, "lengths": lengths,
              "first_ms": first, "repeat_ms": again,
              "first_median_ms": statistics.median(first), "repeat_median_ms": statistics.median(again),
              "operators": table}
    print(f"\n{shape}: prefill of 1 or 2 prompts in {args.prompt} tokens into {args.slots} slots")
    print(f"  first time a length is seen: median {result['first_median_ms']:.1f} ms, "
          f"max {max(first):.1f} ms; calls: {' '.join(f'{t:.0f}' for t in first[:24])}")
    print(f"  repeated lengths:            median {result['repeat_median_ms']:.1f} ms, max {max(again):.1f} ms")
    print(f"  {'self CPU us':>12} {'self CUDA us':>12} {'calls':>6}  operator (one repeated call)")
    for row in table:
        print(f"  {row['self_cpu_us']:12.0f} {row['self_cuda_us']:12.0f} {row['calls']:6d}  {row['op']}")
    return result


def profile_grid(shape: str, args: argparse.Namespace) -> dict:
    """``--grid P,L``: one ``model.prefill`` of ``P`` random prompts of ``L`` tokens, one slot each (the
    batched prefill a fixed batch of equal prompts gets), fused projections as the engine has them; wall
    milliseconds over ``--calls`` repeats after a warm-up, then the operator table of one call."""
    device = torch.device("cuda", torch.cuda.current_device())
    dtype = DTYPES[args.dtype]
    model = build_shape(shape, device, dtype).eval()
    model.set_kernels(select_kernels(None, device)).fuse_projections()
    model.compile_pointwise(args.compile_pointwise)
    prompts, length = (int(v) for v in args.grid.split(","))
    cache = model.allocate_cache(prompts, length + 8, dtype=dtype, state_dtype=DTYPES[args.state_dtype])
    ids = torch.randint(16, model.config.vocab_size, (prompts, length), device=device)
    slots = torch.arange(prompts, device=device)[:, None]
    with torch.no_grad():
        def call():
            return model.prefill(ids, cache, slots)
        timed_call(call)
        times = [timed_call(call) for _ in range(args.calls)]
        table = operator_table(call, args.top)
    tokens = prompts * length
    result = {"shape": shape, "prompts": prompts, "length": length, "compile_pointwise": args.compile_pointwise,
              "ms": times, "median_ms": statistics.median(times), "operators": table}
    print(f"\n{shape}: prefill of {prompts} x {length} tokens: median {result['median_ms']:.1f} ms "
          f"({tokens / result['median_ms'] * 1e3:,.0f} tok/s)")
    print(f"  {'self CPU us':>12} {'self CUDA us':>12} {'calls':>6}  operator (one call)")
    for row in table:
        print(f"  {row['self_cpu_us']:12.0f} {row['self_cuda_us']:12.0f} {row['calls']:6d}  {row['op']}")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="smollm2-135m,llamba-135m,hybrid-135m")
    p.add_argument("--prompt", default="60,280", help="prompt lengths, min,max tokens")
    p.add_argument("--calls", type=int, default=24, help="prefill calls per pass")
    p.add_argument("--slots", type=int, default=64, help="cache slots each call fills")
    p.add_argument("--batch", type=int, default=1024, help="cache slots allocated")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--state-dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--top", type=int, default=20, help="operators listed per shape")
    p.add_argument("--grid", default=None, help="P,L: instead, time one prefill of P prompts of L tokens")
    p.add_argument("--compile-pointwise", action="store_true",
                   help="Norms, gates and rotary embeddings as compiled kernels (as `generate` with compile on).")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    profile = profile_grid if args.grid else profile_shape
    results = [profile(shape, args) for shape in args.shapes.split(",")]
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
