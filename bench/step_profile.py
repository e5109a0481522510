"""Where one decode step spends its time: per-kernel breakdown and graph-replay timings.

    python bench/step_profile.py --shapes llamba-1b,llama-3.2-1b --batches 64,512 --out step.json

For each shape x batch (random weights, bf16, kernels chosen by "auto"): the step at context
length ``--ctx`` is timed as (a) ``model.step`` replayed from a CUDA graph, (b) the same plus
sampling at temperature 1 (the engine's sampler), and (c) one eager step under the torch profiler,
whose CUDA kernels are summed by name. The table shows the top kernels and their share of the step.
This is a diagnosis tool for ``docs/performance.md``; it changes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from thinkfast.devices import DTYPES
from thinkfast.generate.sampling import SamplingParams, counter_uniform, sample_tokens
from thinkfast.kernels import select_kernels
from thinkfast.profile.shapes import build_shape


def graph_time_ms(fn, iters: int = 50) -> float:
    """Median milliseconds of ``fn`` replayed from a CUDA graph (after warm-up on a side stream)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def kernel_breakdown(fn, steps: int = 3, top: int = 20) -> list[dict]:
    """CUDA kernel time per step, summed by kernel name, largest first."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    rows = []
    for evt in prof.key_averages():
        device_us = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        if device_us > 0 and evt.key and not evt.key.startswith("ProfilerStep"):
            rows.append({"kernel": evt.key[:90], "calls_per_step": evt.count / steps,
                         "us_per_step": device_us / steps})
    rows.sort(key=lambda r: -r["us_per_step"])
    return rows[:top]


def profile_one(shape: str, batch: int, ctx: int, dtype: torch.dtype, state_dtype: torch.dtype) -> dict:
    device = torch.device("cuda", torch.cuda.current_device())
    model = build_shape(shape, device, dtype).eval()
    model.set_kernels(select_kernels(None, device))
    cache = model.allocate_cache(batch, ctx + 64, dtype=dtype, state_dtype=state_dtype)
    vocab = model.config.vocab_size
    tokens = torch.randint(0, vocab, (batch,), device=device)
    positions = torch.full((batch,), ctx, dtype=torch.long, device=device)
    keys = torch.arange(batch, device=device)
    zeros = torch.zeros(batch, dtype=torch.long, device=device)
    params = SamplingParams(temperature=1.0)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())

    @torch.no_grad()
    def step_only():
        model.step(tokens, positions, cache)

    @torch.no_grad()
    def step_and_sample():
        logits = model.step(tokens, positions, cache)
        sample_tokens(logits, counter_uniform(0, keys, zeros, positions), params)

    result = {"shape": shape, "batch": batch, "ctx": ctx, "weight_bytes": weights,
              "step_ms": graph_time_ms(step_only), "step_sample_ms": graph_time_ms(step_and_sample),
              "kernels": kernel_breakdown(step_and_sample)}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="llamba-1b,llama-3.2-1b")
    p.add_argument("--batches", default="64,512")
    p.add_argument("--ctx", type=int, default=768, help="context length (tokens) at which the step runs")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--state-dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    results = []
    for shape in args.shapes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = profile_one(shape, batch, args.ctx, DTYPES[args.dtype], DTYPES[args.state_dtype])
            torch.cuda.empty_cache()
            results.append(r)
            print(f"\n{shape} batch {batch} ctx {args.ctx}: step {r['step_ms']:.3f} ms, "
                  f"step+sample {r['step_sample_ms']:.3f} ms, weights {r['weight_bytes'] / 1e9:.2f} GB")
            total = sum(k["us_per_step"] for k in r["kernels"])
            for k in r["kernels"][:14]:
                print(f"  {k['us_per_step']:8.1f} us {100 * k['us_per_step'] / total:5.1f}%  "
                      f"x{k['calls_per_step']:<5.0f} {k['kernel']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
