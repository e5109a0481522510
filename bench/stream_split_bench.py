"""Does splitting a decode step's batch over two CUDA streams overlap its compute- and memory-bound work?

    python bench/stream_split_bench.py --shape llamba-1b --batch 512 --out split.json

At batch 512 a Llamba-1B decode step is mostly compute-bound GEMMs and a bandwidth-bound SSD state
update, run one after the other. This times, from a CUDA graph (the step compiled as the engine
compiles it, with the engine's sampler at temperature 1, context ``--ctx``, random weights, bf16):

- ``whole``: one step over ``batch`` rows;
- ``halves, one stream``: ``--splits`` steps over ``batch / splits`` rows each, back to back;
- ``halves, two streams``: the same steps alternated over two streams in the same graph, so one
  part's state update can run beside another part's GEMMs.

It changes nothing in the engine; it measures whether such a change could pay.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from cuda_timing import graph_replay_ms
from step_profile import random_step_inputs, sampled_step

from thinkfast.devices import DTYPES
from thinkfast.generate.stepping import compile_and_warm
from thinkfast.kernels import select_kernels
from thinkfast.profile.shapes import build_shape


def make_step(model, rows: int, ctx: int, dtype, state_dtype, device):
    """A compiled, warmed step-and-sample over a fresh cache of ``rows`` rows at context ``ctx``."""
    cache, tokens, positions = random_step_inputs(model, rows, ctx, dtype, state_dtype, device)
    compiled = compile_and_warm(sampled_step(model, tokens, positions, cache), device)
    if compiled.error:
        raise RuntimeError(compiled.error)
    return compiled.step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="llamba-1b")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--splits", default="2,4", help="comma-separated numbers of parts")
    p.add_argument("--ctx", type=int, default=768)
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--state-dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    device = torch.device("cuda", torch.cuda.current_device())
    dtype, state_dtype = DTYPES[args.dtype], DTYPES[args.state_dtype]
    model = build_shape(args.shape, device, dtype).eval().fuse_projections()
    model.set_kernels(select_kernels(None, device))

    whole = make_step(model, args.batch, args.ctx, dtype, state_dtype, device)
    result = {"shape": args.shape, "batch": args.batch, "ctx": args.ctx, "device": torch.cuda.get_device_name(),
              "whole_ms": graph_replay_ms(whole), "splits": {}}
    print(f"{args.shape} batch {args.batch} ctx {args.ctx}: whole step {result['whole_ms']:.3f} ms", flush=True)
    del whole
    streams = [torch.cuda.Stream(device) for _ in range(2)]
    for splits in (int(s) for s in args.splits.split(",") if s):
        parts = [make_step(model, args.batch // splits, args.ctx, dtype, state_dtype, device)
                 for _ in range(splits)]

        def one_stream(parts=parts):
            for part in parts:
                part()

        def two_streams(parts=parts):
            main_stream = torch.cuda.current_stream(device)
            for s in streams:
                s.wait_stream(main_stream)
            for i, part in enumerate(parts):
                with torch.cuda.stream(streams[i % 2]):
                    part()
            for s in streams:
                main_stream.wait_stream(s)

        entry = {"one_stream_ms": graph_replay_ms(one_stream), "two_streams_ms": graph_replay_ms(two_streams)}
        result["splits"][splits] = entry
        print(f"  {splits} parts of {args.batch // splits}: one stream {entry['one_stream_ms']:.3f} ms, "
              f"two streams {entry['two_streams_ms']:.3f} ms", flush=True)
        del parts
        torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
