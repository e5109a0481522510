"""kd-stage training throughput: a Llamba-1B-shaped student distilled from a Llama-3.2-1B-shaped teacher.

Random weights, bfloat16 autocast, the real training loop (:func:`thinkfast.distill.trainer.train_stage`)
fed random packed rows. Reports tokens/s (all processes) and model FLOPs utilisation (MFU): model
FLOPs per token = 6 x student parameters (forward + backward) + 2 x teacher parameters (forward)
+ causal attention of the teacher (2 x layers x seq_len x width), over the card's dense bf16 peak.

One GPU::

    python bench/distill_bench.py --out bench-distill-1gpu.json

Two GPUs (DDP), with the scaling ratio against the one-GPU file from the same machine::

    torchrun --nproc-per-node 2 bench/distill_bench.py --baseline bench-distill-1gpu.json \\
        --out bench-distill-2gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

#: Dense bf16 tensor-core peak, FLOP/s, by device-name fragment.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}

LLAMA_1B = {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_layers": 16,
            "num_heads": 32, "num_kv_heads": 8, "head_dim": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            "max_position_embeddings": 131072, "tie_embeddings": True}


class RandomRows:
    """Endless random packed rows (one document per row, every token a loss token)."""

    def __init__(self, vocab: int, seq_len: int, batch_size: int, seed: int):
        self.vocab, self.seq_len, self.batch_size = vocab, seq_len, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.rows = 0

    def __next__(self):
        from thinkfast.data.packing import PackedBatch

        self.rows += self.batch_size
        ids = torch.randint(0, self.vocab, (self.batch_size, self.seq_len), generator=self.generator)
        return PackedBatch(ids, torch.zeros_like(ids), torch.ones_like(ids, dtype=torch.bool))

    def state_dict(self) -> dict:
        return {"rows": self.rows}


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def model_flops_per_token(student, teacher, seq_len: int) -> float:
    n_student = sum(p.numel() for p in student.parameters())
    n_teacher = sum(p.numel() for p in teacher.parameters())
    cfg = teacher.config
    attention = 2 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim
    return 6 * n_student + 2 * n_teacher + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=4, help="rows per micro-batch per GPU")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the average")
    parser.add_argument("--student", default="llamba", help="student plugin (llamba | mambainllama)")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--strategy", default="ddp", choices=("ddp", "fsdp"))
    parser.add_argument("--baseline", type=Path, default=None, help="one-GPU JSON for the scaling ratio")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from thinkfast.config.validate import from_dict
    from thinkfast.distill.config import StageSection
    from thinkfast.distill.distributed import init_distributed, shard_student, shutdown_distributed
    from thinkfast.distill.engine import enable_activation_checkpointing
    from thinkfast.distill.metrics import MetricsLog, ProgressDisplay, read_metrics
    from thinkfast.distill.trainer import TrainContext, train_stage
    from thinkfast.kernels import select_kernels
    from thinkfast.models import ModelConfig, ThinkfastLM, build_student

    ctx = init_distributed("auto")
    if ctx.device.type != "cuda":
        raise SystemExit("distill_bench needs a CUDA GPU")
    torch.manual_seed(0)
    kernels = select_kernels(None, ctx.device)
    teacher = ThinkfastLM(ModelConfig(**LLAMA_1B), device=ctx.device, dtype=torch.bfloat16)
    teacher = teacher.eval().requires_grad_(False).set_kernels(kernels)
    student = build_student(teacher, args.student, {}).to(dtype=torch.float32).set_kernels(kernels)
    flops_per_token = model_flops_per_token(student, teacher, args.seq_len)
    if args.activation_checkpointing:
        enable_activation_checkpointing(student)
    autocast = torch.bfloat16
    if args.strategy == "fsdp" and ctx.distributed:
        shard_student(student, ctx.device, torch.bfloat16)
        autocast = None
    if args.compile:
        student.compile()
    stage = from_dict(StageSection, {"kind": "kd", "steps": args.steps, "seq_len": args.seq_len,
                                     "batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": 1e-4,
                                     "schedule": "constant", "loss_on": "all"})
    with tempfile.TemporaryDirectory() as tmp:
        metrics = MetricsLog(Path(tmp) / "metrics.jsonl") if ctx.is_main else None
        tc = TrainContext(ctx=ctx, student=student, teacher=teacher, checkpoint_dir=Path(tmp) / "ckpt",
                          metrics=metrics, progress=ProgressDisplay(False), strategy=args.strategy,
                          autocast_dtype=autocast, keep_checkpoints=1)
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        train_stage(tc, 0, stage, RandomRows(LLAMA_1B["vocab_size"], args.seq_len, args.batch_size, ctx.rank),
                    None, None, 0)
        wall = time.perf_counter() - start
        records = read_metrics(Path(tmp) / "metrics.jsonl") if ctx.is_main else []
    if ctx.is_main:
        rates = [r["tokens_per_s"] for r in records[args.warmup:]]
        tps = statistics.median(rates)
        name = torch.cuda.get_device_name(ctx.device)
        peak = peak_flops(name)
        mfu = tps * flops_per_token / (peak * ctx.world_size) if peak else None
        result = {
            "device": name, "gpus": ctx.world_size, "strategy": args.strategy if ctx.distributed else "single",
            "student": args.student, "seq_len": args.seq_len, "batch_size_per_gpu": args.batch_size,
            "grad_accum": args.grad_accum, "steps": args.steps, "warmup_steps_excluded": args.warmup,
            "tokens_per_s": round(tps, 1), "tokens_per_s_per_gpu": round(tps / ctx.world_size, 1),
            "model_flops_per_token": flops_per_token, "mfu": round(mfu, 4) if mfu else None,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 2),
            "activation_checkpointing": args.activation_checkpointing, "compile": args.compile,
            "final_loss": records[-1]["loss"], "wall_s_incl_final_checkpoint": round(wall, 1),
            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
        }
        if args.baseline is not None:
            base = json.loads(args.baseline.read_text())
            result["scaling_ratio"] = round(tps / (base["tokens_per_s"] * ctx.world_size), 3)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        cols = ["device", "gpus", "strategy", "tokens_per_s", "tokens_per_s_per_gpu", "mfu", "peak_memory_gib",
                "scaling_ratio"]
        print(" | ".join(cols))
        print(" | ".join(str(result.get(c, "-")) for c in cols))
    shutdown_distributed()


if __name__ == "__main__":
    main()
