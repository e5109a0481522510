"""Decode attention alone: the ``triton`` split-K kernel at several launch settings, vs sdpa, vs bandwidth.

    python bench/attention_decode_bench.py --shapes llama-3.2-1b,smollm2-135m --batches 64,512 --out a.json

For each teacher shape x batch, one layer's decode attention on random inputs: every row attends to
``--length`` cached keys of a cache of ``--cache-len`` positions (the engine's layout, ``(B, S, Hkv, Dh)``).
Each launch setting of :func:`thinkfast_plugins.kernels.triton_decode.triton_attention_decode`
(``--blocks`` keys per iteration x ``--warps`` x ``--stages`` x ``--programs`` target programs x
``--min-splits`` keys per slice at least) is timed
from a CUDA graph of ``--calls`` calls (median of replays), as is PyTorch's
``scaled_dot_product_attention`` on the same keys (a copy sliced to the length, GQA expanded), and
reported with its bandwidth: the keys and values read over the time. Every setting's output is checked
against sdpa's first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from decode_kernels_bench import graph_us

from thinkfast.devices import DTYPES
from thinkfast.profile.shapes import SHAPES


def layer_inputs(shape: str, batch: int, cache_len: int, length: int, dtype: torch.dtype) -> dict:
    """Random query, cache and lengths for one attention layer of ``shape`` (a teacher shape)."""
    cfg = SHAPES[shape].teacher()
    heads, kv_heads, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    kw = {"device": "cuda", "dtype": dtype}
    return {"q": torch.randn(batch, heads, head_dim, **kw),
            "k": torch.randn(batch, cache_len, kv_heads, head_dim, **kw),
            "v": torch.randn(batch, cache_len, kv_heads, head_dim, **kw),
            "lengths": torch.full((batch,), length, device="cuda", dtype=torch.long),
            "scale": head_dim**-0.5, "group": heads // kv_heads}


def sdpa_decode(t: dict, length: int) -> torch.Tensor:
    """The same attention through ``F.scaled_dot_product_attention``: ``(B, H, Dh)``."""
    k = t["k"][:, :length].transpose(1, 2).repeat_interleave(t["group"], dim=1)  # (B, H, L, Dh)
    v = t["v"][:, :length].transpose(1, 2).repeat_interleave(t["group"], dim=1)
    return F.scaled_dot_product_attention(t["q"][:, :, None], k, v, scale=t["scale"])[:, :, 0]


def bench_one(shape: str, batch: int, args) -> list[dict]:
    from thinkfast_plugins.kernels.triton_decode import triton_attention_decode

    t = layer_inputs(shape, batch, args.cache_len, args.length, DTYPES[args.dtype])
    kv_bytes = 2 * batch * args.length * t["k"].shape[2] * t["k"].shape[3] * t["k"].element_size()
    want = sdpa_decode(t, args.length).float()
    rows = []

    def add(impl: str, us: float, err: float | None) -> None:
        rows.append({"shape": shape, "batch": batch, "length": args.length, "impl": impl, "us": us,
                     "GBps": kv_bytes / us / 1e3, "rel_l2": err})
        print(f"{shape:<14}{batch:>5} {impl:<40}{us:>9.1f} us{rows[-1]['GBps']:>8,.0f} GB/s"
              f"  rel L2 {err if err is not None else float('nan'):.1e}", flush=True)

    settings = itertools.product(*(map(int, v.split(",")) for v in (args.blocks, args.warps, args.stages,
                                                                     args.programs, args.min_splits)))
    for block, warps, stages, programs, min_split in settings:
        if min_split < block:
            continue
        kw = {"block": block, "num_warps": warps, "num_stages": stages, "target_programs": programs,
              "min_split": min_split}

        def call(kw=kw):
            return triton_attention_decode(t["q"], t["k"], t["v"], t["lengths"], t["scale"], **kw)

        try:
            got = call().float()
        except Exception as err:  # a setting that does not fit (shared memory, registers) is reported
            print(f"{shape:<14}{batch:>5} b{block} w{warps} s{stages} p{programs} m{min_split}: "
                  f"{type(err).__name__}")
            continue
        add(f"triton b{block} w{warps} s{stages} p{programs} m{min_split}", graph_us(call, args.calls),
            float((got - want).norm() / want.norm()))
    add("sdpa (sliced, GQA expanded)", graph_us(lambda: sdpa_decode(t, args.length), args.calls), None)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="llama-3.2-1b,smollm2-135m")
    p.add_argument("--batches", default="64,512")
    p.add_argument("--cache-len", type=int, default=1024, help="positions in the cache")
    p.add_argument("--length", type=int, default=768, help="keys each row attends to")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--blocks", default="32,64,128", help="keys per inner iteration")
    p.add_argument("--warps", default="2,4,8")
    p.add_argument("--stages", default="2,3,4")
    p.add_argument("--programs", default="1024,2048,4096", help="target programs (sets the split count)")
    p.add_argument("--min-splits", default="256", help="keys per sequence slice at least (caps the split count)")
    p.add_argument("--calls", type=int, default=16, help="calls per captured graph")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    rows = []
    for shape in args.shapes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            rows += bench_one(shape, batch, args)
            torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps({"card": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
                                        "args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
