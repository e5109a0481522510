"""The training loop of one stage: AdamW, schedule, accumulation, clipping, logging, checkpoints.

One optimizer step takes ``grad_accum`` micro-batches of ``batch_size`` packed rows per
process. The loss of each micro-batch is a *sum* over its loss items, divided by the number of
items of the whole step (all micro-batches, all processes), so the gradient is that of the
step's mean loss whatever the padding, packing, accumulation or process count (DDP and FSDP
average gradients over processes, which the loss scale undoes).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thinkfast.data.packing import PackedLoader
from thinkfast.distill import checkpoint as ckpt
from thinkfast.distill.config import StageSection
from thinkfast.distill.distributed import DistContext, all_reduce_sum, wrap_objective
from thinkfast.distill.metrics import MetricsLog, ProgressDisplay
from thinkfast.distill.objectives import Batch, StageObjective, aligned_layers, teacher_targets
from thinkfast.distill.params import layer_index, param_group, set_trainable
from thinkfast.distill.schedule import build_scheduler
from thinkfast.errors import DataError, RecipeError

#: Called after every optimizer step with the new position (tests use it to interrupt a run).
StepCallback = Callable[[ckpt.Position], None]


@dataclass
class TrainContext:
    """Everything a stage needs that does not change between stages."""

    ctx: DistContext
    student: nn.Module
    teacher: nn.Module | None
    checkpoint_dir: Path
    metrics: MetricsLog | None  # None on processes other than rank 0
    progress: ProgressDisplay
    strategy: str = "ddp"
    autocast_dtype: torch.dtype | None = None
    keep_checkpoints: int = 2
    on_step: StepCallback | None = None
    started: float = field(default_factory=lambda: time.perf_counter())
    # training seconds of earlier invocations of this run: the resumed checkpoint's ``elapsed_s``
    elapsed_before: float = 0.0
    # called once, before the run's first optimizer step, once its first batch has passed its check: the run
    # starts writing files then (a run that stops at a check before it leaves no files, nor touches earlier ones)
    on_start: Callable[[], None] | None = None

    def elapsed(self, now: float | None = None) -> float:
        """The run's training wall seconds at ``now`` (a ``time.perf_counter()`` reading; default: now),
        earlier invocations included up to the checkpoint this one resumed from."""
        return self.elapsed_before + (time.perf_counter() if now is None else now) - self.started

    def start(self) -> None:
        """Call :attr:`on_start` if it has not been called yet."""
        if self.on_start is not None:
            on_start, self.on_start = self.on_start, None
            on_start()


def stage_steps(stage: StageSection, world_size: int) -> int:
    """Optimizer steps of ``stage``: ``steps``, else the token budget over the tokens of one step."""
    if stage.steps:
        return stage.steps
    per_step = stage.seq_len * stage.batch_size * stage.grad_accum * world_size
    return max(math.ceil(stage.tokens / per_step), 1)


def select_trainable(student: nn.Module, stage: StageSection, where: str) -> list[int]:
    """Freeze/unfreeze for ``stage``; return the layers a matrix/hidden stage aligns.

    ``matrix`` and ``hidden`` stages only train parameters inside the aligned layers (the rest
    gets no gradient from a per-layer loss).
    """
    try:
        set_trainable(student, stage.train, stage.layers)
    except ValueError as exc:
        raise RecipeError([f"{where}.train: {exc}"]) from None
    bad = [i for i in stage.layers if i >= len(student.layers)]
    if bad:
        raise RecipeError([f"{where}.layers: {bad} out of range; the student has {len(student.layers)} layers"])
    layers: list[int] = []
    if stage.kind in ("matrix", "hidden"):
        layers = aligned_layers(stage, student)
        keep = set(layers)
        for name, param in student.named_parameters():
            index = layer_index(name)
            if index is None or index not in keep or (stage.kind == "matrix" and param_group(name) != "mixers"):
                param.requires_grad_(False)
        if not layers:
            what = "SSM layers" if stage.kind == "matrix" else "layers"
            raise RecipeError([f"{where}: no {what} to align (check `layers` and `train`)"])
    if not any(p.requires_grad for p in student.parameters()):
        raise RecipeError([f"{where}.train: no parameter trains with train = {stage.train} and "
                           f"layers = {stage.layers}"])
    return layers


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(batch: Any, device: torch.device) -> Batch:
    return Batch(batch.input_ids.to(device, non_blocking=True), batch.doc_ids.to(device, non_blocking=True),
                 batch.loss_mask.to(device, non_blocking=True))


def _grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
        norm = norm.full_tensor()
    return float(norm)


def train_stage(tc: TrainContext, stage_index: int, stage: StageSection, loader: PackedLoader,
                resume: ckpt.Position | None, resume_path: Path | None, global_step: int) -> int:
    """Run ``stage`` to its last step (or continue it from ``resume``); return the new global step."""
    where = f"distill.stages[{stage_index}]"
    ctx, student = tc.ctx, tc.student
    layers = select_trainable(student, stage, where)
    if stage.kind != "sft" and tc.teacher is None:
        raise RecipeError([f"{where}: a '{stage.kind}' stage needs a teacher; set [teacher] model"])
    objective = StageObjective(student, stage, layers)
    module = wrap_objective(objective, ctx, tc.strategy)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, betas=tuple(stage.betas), weight_decay=stage.weight_decay,
                                  fused=ctx.device.type == "cuda")
    total = stage_steps(stage, ctx.world_size)
    scheduler = build_scheduler(optimizer, total, schedule=stage.schedule, warmup_steps=stage.warmup_steps,
                                decay_fraction=stage.decay_fraction, min_lr_ratio=stage.min_lr_ratio)
    position = ckpt.Position(stage_index=stage_index, step=0, global_step=global_step)
    if resume is not None and resume_path is not None and resume.step > 0:
        ckpt.load_checkpoint(resume_path, student, optimizer, scheduler)
        loader.load_state_dict(resume.data_state)
        position = resume
    tokens_per_step = stage.seq_len * stage.batch_size * stage.grad_accum * ctx.world_size
    tc.progress.start_stage(f"{stage_index}:{stage.label}", total, position.step)
    window_start, window_tokens = time.perf_counter(), 0
    student.train()
    while position.step < total:
        micro = [_to_device(next(loader), ctx.device) for _ in range(stage.grad_accum)]
        count = all_reduce_sum(torch.tensor(float(sum(objective.count(b) for b in micro)), device=ctx.device))
        if position.step == 0 and float(count) == 0:
            raise DataError(f"{where}: the first batch holds no loss tokens; with loss_on = 'responses' the "
                            f"prompts may fill all {stage.seq_len} tokens: raise seq_len or use loss_on = 'all'")
        tc.start()
        scale = ctx.world_size / count.clamp(min=1.0)
        loss_sum = torch.zeros((), device=ctx.device)
        for k, batch in enumerate(micro):
            targets = {}
            if tc.teacher is not None:
                with _autocast(ctx.device, tc.autocast_dtype):
                    targets = teacher_targets(stage, tc.teacher, batch, layers)
            sync = (contextlib.nullcontext() if k == len(micro) - 1 or not hasattr(module, "no_sync")
                    else module.no_sync())
            with sync:
                with _autocast(ctx.device, tc.autocast_dtype):
                    loss = module(batch, targets)
                (loss * scale).backward()
            loss_sum += loss.detach()
        grad_norm = _grad_norm(params, stage.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        position = ckpt.Position(stage_index, position.step + 1, position.global_step + 1,
                                 position.tokens + tokens_per_step, loader.state_dict())
        window_tokens += tokens_per_step
        last = position.step == total
        if position.step % stage.log_every == 0 or last:
            step_loss = float(all_reduce_sum(loss_sum) / count.clamp(min=1.0))
            now = time.perf_counter()
            tps = window_tokens / max(now - window_start, 1e-9)
            window_start, window_tokens = now, 0
            if tc.metrics is not None:
                tc.metrics.write({"stage": stage.label, "stage_index": stage_index, "kind": stage.kind,
                                  "step": position.step, "global_step": position.global_step,
                                  "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "tokens": position.tokens,
                                  "tokens_per_s": round(tps, 1), "elapsed_s": round(tc.elapsed(now), 3)})
            tc.progress.update(position.step, step_loss, tps, lr)
        if stage.checkpoint_every and position.step % stage.checkpoint_every == 0 and not last:
            saving = time.perf_counter()
            ckpt.save_checkpoint(tc.checkpoint_dir, position, student, optimizer, scheduler,
                                 keep=tc.keep_checkpoints, elapsed=tc.elapsed)
            window_start += time.perf_counter() - saving  # tokens/s counts training, not the save
        if tc.on_step is not None:
            tc.on_step(position)
    tc.progress.close()
    boundary = ckpt.Position(stage_index + 1, 0, position.global_step)
    ckpt.save_checkpoint(tc.checkpoint_dir, boundary, student, optimizer, scheduler, keep=tc.keep_checkpoints,
                         elapsed=tc.elapsed)
    return position.global_step
