"""One process or many: device choice, process-group set-up and wrapping for DDP / FSDP2.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains on ``cuda:LOCAL_RANK`` (NCCL) or on
the CPU (gloo); alone, it uses the recipe's ``run.device``. The same recipe runs either way:
batch sizes are per process and token budgets count all processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from thinkfast.devices import resolve_device
from thinkfast.job import DistEnv


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> DistContext:
    """Join the torchrun process group when there is one; pick this process's device."""
    job = DistEnv.from_env()
    if not job.distributed:
        return DistContext(0, 1, 0, resolve_device(device_name))
    local_rank = job.local_rank
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of ``value`` over all processes (itself when alone)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


def shard_student(student: nn.Module, device: torch.device, mp_dtype: torch.dtype | None) -> None:
    """Apply FSDP2 (``fully_shard``) to every block and then the whole student, in place."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=torch.float32) if mp_dtype else None
    kwargs = {"mp_policy": policy} if policy else {}
    for block in student.layers:
        fully_shard(block, **kwargs)
    fully_shard(student, **kwargs)


def wrap_objective(objective: nn.Module, ctx: DistContext, strategy: str) -> nn.Module:
    """The module the training step calls: the objective itself, or DDP around it.

    With ``strategy = "fsdp"`` the student was sharded beforehand (:func:`shard_student`) and
    the objective is returned as is.
    """
    if not ctx.distributed or strategy == "fsdp":
        return objective
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(objective, device_ids=device_ids)
