"""Forward + backward throughput of a Llamba-1B-shaped student with each kernel set (random weights, bf16).

    python bench/kernels_bench.py --out runs/kernels_bench.json

The student is built by the ``llamba`` plugin from a Llama-3.2-1B-shaped teacher (on the meta device, so
only the student's weights are allocated). Each kernel set runs the same batch: forward, cross-entropy on
random targets, backward. Prints a table (tokens/s, ms per step, peak memory, speed-up over ``torch``) and
writes the same numbers as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

from thinkfast.kernels import select_kernels
from thinkfast.models import ModelConfig, ThinkfastLM, build_student

LLAMA_3_2_1B = ModelConfig(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32, num_kv_heads=8,
    head_dim=64, rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=131072, tie_embeddings=True,
    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192})
KERNEL_SETS = {"torch": {"ssm": "torch", "conv": "torch"}, "mamba-ssm": {"ssm": "mamba-ssm", "conv": "mamba-ssm"}}


def llamba_1b_config(chunk_size: int = 128) -> ModelConfig:
    """The ``llamba`` student config of a Llama-3.2-1B-shaped teacher (no weights allocated)."""
    teacher = ThinkfastLM(LLAMA_3_2_1B, device="meta")
    return build_student(teacher, "llamba", {"chunk_size": chunk_size}).config


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    for module in ("mamba_ssm", "causal_conv1d", "triton"):
        try:
            out[module] = __import__(module).__version__
        except Exception:
            out[module] = "not installed"
    return out


def measure(model: ThinkfastLM, ids: torch.Tensor, doc_ids: torch.Tensor | None, warmup: int,
            iters: int) -> dict[str, float]:
    """Median-free simple timing: mean seconds per forward+backward over ``iters`` after ``warmup``."""
    targets = torch.roll(ids, -1, dims=1)

    def step() -> None:
        logits = model(ids, doc_ids=doc_ids).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()
        model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        step()
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / iters
    return {"ms_per_step": seconds * 1000, "tokens_per_s": ids.numel() / seconds,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--seqlen", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--docs", type=int, default=1, help="packed documents per sequence (doc_ids if > 1)")
    parser.add_argument("--chunk-size", type=int, default=128, help="SSD chunk length (tokens)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--kernels", nargs="+", default=list(KERNEL_SETS), choices=list(KERNEL_SETS))
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("kernels_bench needs a CUDA GPU")
    device = torch.device("cuda")

    torch.manual_seed(0)
    config = llamba_1b_config(args.chunk_size)
    model = ThinkfastLM(config, device=device, dtype=torch.bfloat16)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seqlen), device=device)
    doc_ids = None
    if args.docs > 1:
        doc_ids = (torch.arange(args.seqlen, device=device) * args.docs // args.seqlen).expand(args.batch, -1)

    rows = []
    for name in args.kernels:
        model.set_kernels(select_kernels(KERNEL_SETS[name], device))
        rows.append({"kernels": name, **model.kernels.names(), **measure(model, ids, doc_ids, args.warmup,
                                                                           args.iters)})
    base = next((r for r in rows if r["kernels"] == "torch"), rows[0])
    for r in rows:
        r["speedup_vs_" + base["kernels"]] = r["tokens_per_s"] / base["tokens_per_s"]

    result = {
        "benchmark": "kernels_bench: llamba-1B-shaped student, forward + backward, bf16, random weights",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device), "versions": _versions(),
        "parameters": model.num_parameters(), "batch": args.batch, "seqlen": args.seqlen, "docs": args.docs,
        "chunk_size": args.chunk_size, "iters": args.iters, "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{result['device']} | {model.num_parameters() / 1e9:.3f}B params | batch {args.batch} x {args.seqlen} "
          f"tokens | docs {args.docs}")
    print(f"{'kernels':<10} {'tokens/s':>12} {'ms/step':>10} {'peak GiB':>9} {'speed-up':>9}")
    for r in rows:
        print(f"{r['kernels']:<10} {r['tokens_per_s']:>12,.0f} {r['ms_per_step']:>10.1f} "
              f"{r['peak_memory_gib']:>9.2f} {r['speedup_vs_' + base['kernels']]:>8.2f}x")


if __name__ == "__main__":
    main()
