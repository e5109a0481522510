"""Decode-step SSM kernels alone: the SSD state update and the conv step, Triton vs mamba-ssm, vs bandwidth.

    python bench/decode_kernels_bench.py --shapes llamba-1b,llamba-135m --batches 64,512,1024 --out k.json

For each student shape x batch x state dtype, one layer's decode-step operations on random inputs
laid out as the model passes them (views of one in-projection row): the ``triton`` plugin's SSD step
at each ``--block-p`` x ``--warps`` launch setting, mamba-ssm's ``selective_state_update``, and the
conv steps of both (the conv state is in the model dtype), each with the conv state in the model's cache
layout (channels contiguous) and with each channel's window contiguous (the earlier layout), the Triton
one at each ``--conv-block-d``. Each call is timed from a CUDA graph of
``--calls`` back-to-back calls (median of replays), and reported with its bandwidth: state bytes
read and written over the time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from cuda_timing import graph_replay_ms

from thinkfast.devices import DTYPES
from thinkfast.profile.shapes import build_shape


def graph_us(fn, calls: int) -> float:
    """Median microseconds per call of ``fn`` replayed as a CUDA graph of ``calls`` calls."""
    return 1e3 * graph_replay_ms(fn, calls, replays=15)


def layer_inputs(shape: str, batch: int, dtype: torch.dtype, state_dtype: torch.dtype) -> dict:
    """Random decode-step inputs of one SSM layer of ``shape``, as views of one projection row."""
    model = build_shape(shape, torch.device("cuda"), dtype)
    mixer = next(b.mixer for b in model.layers if b.kind != "attention")
    s = mixer.cfg
    conv_state = mixer.allocate_cache(batch, 1, dtype=dtype, state_dtype=state_dtype,
                                      device=torch.device("cuda")).conv_state.normal_()  # the model's layout
    del model
    proj = torch.randn(batch, s.conv_dim + s.num_heads + 8, device="cuda", dtype=dtype)
    xbc, dt = proj[:, : s.conv_dim], proj[:, s.conv_dim: s.conv_dim + s.num_heads]
    nx, nb = s.num_x_heads * s.head_dim, s.num_b_groups * s.state_size
    x = xbc[:, :nx].unflatten(-1, (s.num_x_heads, s.head_dim))
    if s.num_x_heads != s.num_heads:
        x = x.repeat_interleave(s.num_heads // s.num_x_heads, dim=1)
    B = xbc[:, nx: nx + nb].unflatten(-1, (s.num_b_groups, s.state_size))
    C = xbc[:, nx + nb: nx + nb + s.num_c_groups * s.state_size].unflatten(-1, (s.num_c_groups, s.state_size))
    return {
        "cfg": s, "xbc": xbc, "x": x, "dt": dt, "B": B, "C": C,
        "A": -torch.rand(s.num_heads, device="cuda") * 4,
        "D": torch.randn(s.num_heads, device="cuda", dtype=dtype),
        "dt_bias": torch.randn(s.num_heads, device="cuda", dtype=dtype),
        "state": torch.randn(batch, s.num_heads, s.head_dim, s.state_size, device="cuda", dtype=state_dtype),
        "conv_state": conv_state,  # (B, conv_dim, K - 1), channels contiguous
        "conv_state_rows": conv_state.contiguous(),  # the same values, each channel's window contiguous
        "weight": torch.randn(s.conv_dim, s.conv_kernel, device="cuda", dtype=dtype),
        "bias": torch.randn(s.conv_dim, device="cuda", dtype=dtype) if s.conv_bias else None,
    }


def bench_one(shape: str, batch: int, dtype: torch.dtype, state_dtype: torch.dtype, args) -> list[dict]:
    from thinkfast_plugins.kernels.mamba import MambaSsmKernels
    from thinkfast_plugins.kernels.triton_ssm import triton_conv_step, triton_ssd_step

    t = layer_inputs(shape, batch, dtype, state_dtype)
    ssd_args = (t["x"], t["dt"], t["A"], t["B"], t["C"])
    ssd_kw = {"D": t["D"], "dt_bias": t["dt_bias"]}
    state_bytes = 2 * t["state"].nbytes
    conv_bytes = 2 * t["conv_state"].nbytes + 2 * t["xbc"].numel() * t["xbc"].element_size()
    rows = []

    def add(op: str, impl: str, us: float, nbytes: int) -> None:
        rows.append({"shape": shape, "batch": batch, "state_dtype": str(state_dtype).removeprefix("torch."),
                     "op": op, "impl": impl, "us": us, "GBps": nbytes / us / 1e3})
        print(f"{shape:<13}{batch:>6} {rows[-1]['state_dtype']:<9}{op:<6}{impl:<42}{us:>9.1f} us"
              f"{rows[-1]['GBps']:>9,.0f} GB/s", flush=True)

    for block_p in (int(v) for v in args.block_p.split(",")):
        for warps in (int(v) for v in args.warps.split(",")):
            us = graph_us(lambda bp=block_p, w=warps: triton_ssd_step(t["state"], *ssd_args, **ssd_kw,
                                                                      block_p=bp, num_warps=w), args.calls)
            add("ssd", f"triton p{block_p} w{warps}", us, state_bytes)
    mamba = MambaSsmKernels()
    has_mamba = MambaSsmKernels.availability(torch.device("cuda")) is None
    if has_mamba:
        add("ssd", "mamba-ssm", graph_us(lambda: mamba.ssd_step(t["state"], *ssd_args, **ssd_kw), args.calls),
            state_bytes)
    for layout in ("conv_state", "conv_state_rows"):
        name = "channels contiguous" if layout == "conv_state" else "windows contiguous"
        if has_mamba:
            add("conv", f"causal-conv1d, {name}", graph_us(lambda lay=layout: mamba.causal_conv1d_step(
                t["xbc"], t[lay], t["weight"], t["bias"], activation="silu"), args.calls), conv_bytes)
        for block_d in (int(v) for v in args.conv_block_d.split(",")):
            add("conv", f"triton d{block_d}, {name}", graph_us(lambda lay=layout, bd=block_d: triton_conv_step(
                t["xbc"], t[lay], t["weight"], t["bias"], activation="silu", block_d=bd), args.calls), conv_bytes)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="llamba-1b,llamba-135m")
    p.add_argument("--batches", default="64,512,1024")
    p.add_argument("--state-dtypes", default="bfloat16,float32")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--block-p", default="8,16,32,64", help="head dims per Triton SSD program")
    p.add_argument("--warps", default="1,2,4,8", help="warps per Triton SSD program")
    p.add_argument("--conv-block-d", default="128,256,512", help="channels per Triton conv program")
    p.add_argument("--calls", type=int, default=20, help="calls per captured graph")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    rows = []
    for shape in args.shapes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for sd in args.state_dtypes.split(","):
                rows += bench_one(shape, batch, DTYPES[args.dtype], DTYPES[sd], args)
                torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps({"card": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
