"""Memory: counting tensor bytes, the device's capacity, estimates per cell, caps and OOM detection.

All amounts are bytes. On CUDA the peak is the caching allocator's ``max_memory_allocated``;
on CPU there is no allocator statistic, so the "peak" is the bytes of the weights and the cache
(a lower bound), and a memory cap is enforced by comparing those bytes with the cap.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

#: Fraction of a device's memory a cell may be estimated to use when no cap is given
#: (the rest is the CUDA context, allocator fragmentation and kernels' workspaces).
DEVICE_HEADROOM = 0.92


class MemoryCapExceeded(torch.OutOfMemoryError):
    """The bytes held by a cell went above ``--memory-cap`` (how a cap is enforced off CUDA)."""


def _tensors(obj: object, seen: set[int]) -> Iterator[torch.Tensor]:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value, seen)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name), seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for value in vars(obj).values():
            yield from _tensors(value, seen)


def tensor_bytes(obj: object) -> int:
    """Bytes of every distinct tensor storage reachable from ``obj`` (a module, a cache object, containers)."""
    storages: dict[tuple[str, int], int] = {}
    for t in _tensors(obj, set()):
        if t.device.type == "meta":
            storages[("meta", id(t))] = t.numel() * t.element_size()
            continue
        storage = t.untyped_storage()
        storages[(str(t.device), storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def device_memory(device: torch.device) -> int:
    """Total memory of ``device`` in bytes (physical RAM for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class CacheFootprint:
    """Bytes of one decode slot's cache: ``fixed`` (SSM and conv states) + ``per_token`` x max length (KV)."""

    fixed: int
    per_token: int

    def slot_bytes(self, seqlen: int) -> int:
        """Bytes one slot's cache takes when allocated for ``seqlen`` tokens."""
        return self.fixed + self.per_token * seqlen


def measure_cache_footprint(model, dtype: torch.dtype, state_dtype: torch.dtype,
                            lengths: tuple[int, int] = (256, 512)) -> CacheFootprint:
    """Fit :class:`CacheFootprint` from two one-slot allocations of ``model.allocate_cache``."""
    sizes = []
    for length in lengths:
        cache = model.allocate_cache(1, length, dtype=dtype, state_dtype=state_dtype)
        sizes.append(tensor_bytes(cache))
        del cache
    per_token = max(0, (sizes[1] - sizes[0]) // (lengths[1] - lengths[0]))
    return CacheFootprint(fixed=max(0, sizes[0] - per_token * lengths[0]), per_token=per_token)


def estimate_cell_bytes(weight_bytes: int, footprint: CacheFootprint, batch: int, seqlen: int, prompt_len: int,
                        vocab_size: int, hidden_size: int, intermediate_size: int) -> int:
    """A cell's estimated peak: weights + cache + workspace.

    Workspace: float32 logits and their softmax for every slot (``2 x batch x vocab x 4``) plus
    the prefill's activations (``8 x prompt_len x max(hidden, intermediate) x 4``). Attention
    kernels that materialise the score matrix need more; that shows up as an OOM, not here.
    """
    cache = batch * footprint.slot_bytes(seqlen)
    logits = 2 * batch * vocab_size * 4
    prefill = 8 * prompt_len * max(hidden_size, intermediate_size) * 4
    return weight_bytes + cache + logits + prefill


def memory_limit(device: torch.device, cap: int | None) -> int:
    """The bytes a cell may use: the cap if given, else :data:`DEVICE_HEADROOM` of the device's memory."""
    if cap:
        return cap
    return int(DEVICE_HEADROOM * device_memory(device))


def apply_cap(device: torch.device, cap: int | None) -> None:
    """Make the caching allocator itself refuse to go past ``cap`` bytes (none: the whole device).

    CUDA only; a no-op elsewhere (see :func:`enforce_cap`).
    """
    if device.type == "cuda":
        fraction = min(1.0, cap / device_memory(device)) if cap else 1.0
        torch.cuda.set_per_process_memory_fraction(fraction, device)


def enforce_cap(device: torch.device, held_bytes: int, cap: int | None) -> None:
    """Raise :class:`MemoryCapExceeded` if ``held_bytes`` is above ``cap`` (off CUDA, where no allocator does)."""
    if cap and device.type != "cuda" and held_bytes > cap:
        raise MemoryCapExceeded(f"{held_bytes} bytes held > memory cap {cap} bytes")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA OOM, :class:`MemoryCapExceeded` and the CPU allocator's failure."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc))


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device, held_bytes: int) -> int:
    """Peak allocated bytes since :func:`reset_peak` (CUDA), else ``held_bytes``."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return held_bytes


def free_memory(device: torch.device) -> None:
    """Collect garbage and return cached blocks to the device (after a cell, OOM or not)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
