"""Choosing the device and dtype a run uses (``run.device`` / ``run.dtype``)."""

from __future__ import annotations

import platform

import torch

from thinkfast.errors import EngineUnavailableError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``run.device`` -> a torch device; CUDA devices always carry an index.

    ``"auto"`` is a CUDA GPU when one is visible, else the CPU. A bare ``"cuda"`` becomes
    ``cuda:<local_rank>`` (under torchrun) or the current CUDA device. Asking for CUDA where none is
    visible is an :class:`EngineUnavailableError`.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise EngineUnavailableError(f"device {name!r} is not a device name; use 'auto', 'cpu', 'cuda' or "
                                     f"'cuda:N'") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise EngineUnavailableError(f"run.device = {name!r} but no CUDA GPU is visible; use 'auto' or 'cpu'")
    if device.index is None:
        device = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``run.dtype`` -> a torch dtype; ``"auto"`` is bfloat16 on CUDA and float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def device_name(device: torch.device) -> str:
    """A human-readable name: the GPU model, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"
