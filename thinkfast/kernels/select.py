"""Choosing a kernel plugin per operation: pinned by the recipe or the best available for the device."""

from __future__ import annotations

from typing import Any

import torch

from thinkfast.errors import EngineUnavailableError
from thinkfast.kernels.base import OPERATIONS, Kernels, KernelSet
from thinkfast.kernels.guard import KernelProbe


def _registered() -> dict[str, KernelProbe]:
    from thinkfast.registry import get_registry

    registry = get_registry()
    entries = (registry.entry("kernels", name) for name in registry.names("kernels"))
    return {entry.name: KernelProbe(entry.component, entry) for entry in entries}


def select_kernels(section: Any = None, device: torch.device | str = "cpu",
                   available: dict[str, type[KernelSet]] | None = None) -> Kernels:
    """The kernel set for each operation.

    Args:
        section: an object with ``ssm``, ``conv`` and ``attention`` attributes (the recipe's
            ``[kernels]`` section, :class:`thinkfast.config.common.KernelsSection`) or a dict with
            those keys; each is ``"auto"`` or a kernel plugin name. ``None`` means all ``"auto"``.
        device: the model's device.
        available: registered kernel sets by name (default: the plugin registry).

    Raises:
        EngineUnavailableError: a pinned plugin that does not exist, lacks the operation or cannot
            run on ``device`` (the message says why and what is available).
    """
    device = torch.device(device)
    given = {name: KernelProbe(cls) for name, cls in (available or {}).items()}
    sets = given if available is not None else _registered()
    sets.setdefault("torch", KernelProbe(Kernels.reference().ssm.__class__))
    for probe in sets.values():
        probe.checked()
    chosen: dict[str, KernelSet] = {}
    instances: dict[str, KernelSet] = {}
    for op in OPERATIONS:
        wanted = _wanted(section, op)
        if wanted == "auto":
            usable = _usable(sets, op, device)
            name = max(usable, key=lambda n: (usable[n].priority(op, device), n == "torch"))
        else:
            name = wanted
            _check_pinned(name, op, device, sets)
        if name not in instances:
            instances[name] = sets[name].create()
        chosen[op] = instances[name]
    return Kernels(**chosen)


def _usable(sets: dict[str, KernelProbe], op: str, device: torch.device) -> dict[str, KernelProbe]:
    """The sets that provide ``op`` and can run it on ``device``."""
    return {n: p for n, p in sets.items() if op in p.operations and p.availability(device, op) is None}


def _wanted(section: Any, op: str) -> str:
    if section is None:
        return "auto"
    value = section.get(op, "auto") if isinstance(section, dict) else getattr(section, op, "auto")
    return value or "auto"


def _check_pinned(name: str, op: str, device: torch.device, sets: dict[str, KernelProbe]) -> None:
    """The pinned set ``name`` exists, provides ``op`` and can run it (the others are asked only to list the
    alternatives in the message)."""
    def options() -> str:
        return ", ".join(sorted(_usable(sets, op, device))) + " (or 'auto')"

    if name not in sets:
        raise EngineUnavailableError(
            f"[kernels] {op} = '{name}': no kernel plugin of that name is installed; available for {op} on "
            f"{device}: {options()}")
    probe = sets[name]
    if op not in probe.operations:
        raise EngineUnavailableError(
            f"[kernels] {op} = '{name}': that plugin does not provide '{op}' (it provides "
            f"{', '.join(probe.operations)}); use one of: {options()}")
    reason = probe.availability(device, op)
    if reason is not None:
        raise EngineUnavailableError(
            f"[kernels] {op} = '{name}' cannot run on {device}: {reason}; use one of: {options()}")
