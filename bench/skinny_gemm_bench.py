"""The decode step's GEMMs alone: how close cuBLAS (and a Triton alternative) come to the memory bandwidth.

    python bench/skinny_gemm_bench.py --shapes llama-3.2-1b,llamba-1b --batches 64,512 --out gemm.json

At batch 64 a decode step is a chain of GEMMs ``x (M, K) @ W (N, K)^T`` whose cost is reading ``W``. For
every distinct weight shape the step multiplies by (after
:meth:`~thinkfast.models.model.ThinkfastLM.fuse_projections`; each with how many times a step uses it), the
script times, from a CUDA graph, with enough copies of the weight cycled that none is served from the L2
cache:

- ``cublas``: ``F.linear(x, W)``, what the model runs;
- ``cublas_kn``: ``x @ Wt`` with the weight stored transposed, ``(K, N)`` contiguous (another cuBLAS kernel
  family);
- ``triton``: a skinny-GEMM Triton kernel (one program per ``BLOCK_N`` output columns and ``SPLIT_K`` slice
  of ``K``), the best of a small grid of launch settings, its output checked against ``cublas``.

GB/s counts the weight, the input and the output once; ``bandwidth`` is a device-to-device copy measured in
the same process. A diagnosis tool for ``docs/performance.md``; it changes nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import triton
import triton.language as tl
from cuda_timing import graph_replay_ms

from thinkfast.profile.shapes import build_shape
from thinkfast.profile.timing import measure_bandwidth

L2_DEFEAT_BYTES = 256 * 2**20


@triton.jit
def _skinny_gemm_kernel(x_ptr, w_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        SPLIT_K: tl.constexpr):
    """y[m, n] (+)= sum_k x[m, k] * w[n, k] over this program's K slice; fp32 atomics when SPLIT_K > 1."""
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(pid_k * BLOCK_K, K, BLOCK_K * SPLIT_K):
        a = tl.load(x_ptr + rm[:, None] * stride_xm + (k0 + rk)[None, :],
                    mask=(rm[:, None] < M) & ((k0 + rk)[None, :] < K), other=0.0)
        b = tl.load(w_ptr + rn[:, None] * stride_wn + (k0 + rk)[None, :],
                    mask=(rn[:, None] < N) & ((k0 + rk)[None, :] < K), other=0.0)
        acc += tl.dot(a, tl.trans(b))
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    out = y_ptr + rm[:, None] * stride_ym + rn[None, :]
    if SPLIT_K == 1:
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(out, acc, mask=mask)


def triton_linear(x: torch.Tensor, w: torch.Tensor, block_n: int, block_k: int, split_k: int,
                  stages: int, warps: int) -> torch.Tensor:
    """``F.linear(x, w)`` for a 2-D ``x`` (M, K) and ``w`` (N, K) through :func:`_skinny_gemm_kernel`."""
    m, k = x.shape
    n = w.shape[0]
    block_m = 64 if m <= 64 else 128
    y = (torch.empty(m, n, device=x.device, dtype=x.dtype) if split_k == 1
         else torch.zeros(m, n, device=x.device, dtype=torch.float32))
    grid = (triton.cdiv(n, block_n), triton.cdiv(m, block_m), split_k)
    _skinny_gemm_kernel[grid](x, w, y, m, n, k, x.stride(0), w.stride(0), y.stride(0),
                              BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k,
                              num_stages=stages, num_warps=warps)
    return y if split_k == 1 else y.to(x.dtype)


def step_gemm_shapes(model: nn.Module) -> Counter:
    """``(N, K)`` of every weight a decode step multiplies by, with how many times a step uses it."""
    model.fuse_projections()
    counts: Counter = Counter()
    grouped: set[int] = set()
    for module in model.modules():
        group = getattr(module, "fused_qkv", None) or getattr(module, "padded_in_proj", None)
        if group is not None:
            counts[tuple(group.weight.shape)] += 1
            grouped.update(id(lin) for lin in group.linears)
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module) not in grouped:
            counts[tuple(module.weight.shape)] += 1
    return counts


def copy_bandwidth(device: torch.device) -> float:
    """Device-to-device copy GB/s (:func:`~thinkfast.profile.timing.measure_bandwidth`), after a second of
    copies brings the clocks up (measured cold, as the first work of the process, an H100 read 2,417
    instead of about 3,000)."""
    src = torch.empty(2**30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(1000):
        dst.copy_(src)
    del src, dst
    return measure_bandwidth(device) / 1e9


def time_shape(n: int, k: int, m: int, device: torch.device, configs: list[tuple]) -> dict:
    """ms and GB/s of each implementation for one ``(M, K) @ (N, K)^T``; Triton's best config."""
    weight_bytes = n * k * 2
    copies = max(2, -(-L2_DEFEAT_BYTES // weight_bytes))
    weights = [torch.randn(n, k, device=device, dtype=torch.bfloat16) / k**0.5 for _ in range(copies)]
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    moved = weight_bytes + 2 * m * (n + k)
    row = {"N": n, "K": k, "M": m, "weight_MB": weight_bytes / 1e6}

    def timed(call, ws: list[torch.Tensor]) -> float:
        index = itertools.cycle(range(copies))
        return graph_replay_ms(lambda: call(ws[next(index)]), calls=copies)

    ref = F.linear(x, weights[0]).float()
    row["cublas_ms"] = timed(lambda w: F.linear(x, w), weights)
    transposed = [w.t().contiguous() for w in weights]  # (K, N) contiguous
    row["cublas_kn_ms"] = timed(lambda w: x @ w, transposed)
    del transposed
    best = None
    for cfg in configs:
        block_n, block_k, split_k, stages, warps = cfg
        try:
            out = triton_linear(x, weights[0], *cfg).float()
            err = ((out - ref).norm() / ref.norm()).item()
            if err > 1e-2:
                raise RuntimeError(f"relative L2 {err:.2e}")
            ms = timed(lambda w, cfg=cfg: triton_linear(x, w, *cfg), weights)
        except Exception as exc:  # a config that does not fit (shared memory, registers) is skipped
            row.setdefault("triton_skipped", []).append(f"{cfg}: {str(exc).splitlines()[0][:120]}")
            continue
        if best is None or ms < best[0]:
            best = (ms, cfg, err)
    for name in ("cublas", "cublas_kn"):
        row[f"{name}_GBs"] = moved / row[f"{name}_ms"] / 1e6
    if best is not None:
        row.update(triton_ms=best[0], triton_GBs=moved / best[0] / 1e6, triton_rel_l2=best[2],
                   triton_config=dict(zip(("block_n", "block_k", "split_k", "stages", "warps"), best[1],
                                          strict=True)))
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="llama-3.2-1b,llamba-1b")
    p.add_argument("--batches", default="64")
    p.add_argument("--block-n", default="16,32,64")
    p.add_argument("--block-k", default="128,256")
    p.add_argument("--split-k", default="1,2,4")
    p.add_argument("--stages", default="3,4")
    p.add_argument("--warps", default="4")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device("cuda")
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    configs = list(itertools.product(ints(args.block_n), ints(args.block_k), ints(args.split_k),
                                     ints(args.stages), ints(args.warps)))
    result = {"device": torch.cuda.get_device_name(), "bandwidth_GBs": copy_bandwidth(device), "shapes": {}}
    print(f"{result['device']}: copy bandwidth {result['bandwidth_GBs']:,.0f} GB/s")
    for shape in (s for s in args.shapes.split(",") if s):
        counts = step_gemm_shapes(build_shape(shape, torch.device("meta"), torch.bfloat16))
        rows = []
        for m in ints(args.batches):
            for (n, k), uses in sorted(counts.items()):
                row = time_shape(n, k, m, device, configs) | {"uses_per_step": uses}
                rows.append(row)
                print(f"{shape} M={m} N={n} K={k} x{uses}: cublas {row['cublas_ms'] * 1e3:.1f} us "
                      f"({row['cublas_GBs']:,.0f} GB/s), kn {row['cublas_kn_ms'] * 1e3:.1f} us "
                      f"({row['cublas_kn_GBs']:,.0f}), triton {row.get('triton_ms', float('nan')) * 1e3:.1f} us "
                      f"({row.get('triton_GBs', float('nan')):,.0f}) {row.get('triton_config')}", flush=True)
            for impl in ("cublas", "cublas_kn", "triton"):
                total = sum(r.get(f"{impl}_ms", float("nan")) * r["uses_per_step"] for r in rows if r["M"] == m)
                print(f"{shape} M={m}: {impl} all GEMMs of a step {total * 1e3:.0f} us")
        result["shapes"][shape] = rows
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
