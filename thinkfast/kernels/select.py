"""Choosing a kernel plugin per operation: pinned by the recipe or the best available for the device."""

from __future__ import annotations

from typing import Any

import torch

from thinkfast.errors import EngineUnavailableError
from thinkfast.kernels.base import OPERATIONS, Kernels, KernelSet


def _registered() -> dict[str, type[KernelSet]]:
    from thinkfast.registry import get_registry

    registry = get_registry()
    return {name: registry.get("kernels", name) for name in registry.names("kernels")}


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
    sets = dict(available) if available is not None else _registered()
    sets.setdefault("torch", Kernels.reference().ssm.__class__)
    chosen: dict[str, KernelSet] = {}
    instances: dict[str, KernelSet] = {}
    for op in OPERATIONS:
        wanted = _wanted(section, op)
        usable = {n: c for n, c in sets.items() if op in c.operations and c.availability(device, op) is None}
        if wanted == "auto":
            name = max(usable, key=lambda n: (usable[n].priority(op, device), n == "torch"))
        else:
            name = wanted
            _check_pinned(name, op, device, sets, usable)
        if name not in instances:
            instances[name] = sets[name]()
        chosen[op] = instances[name]
    return Kernels(**chosen)


def _wanted(section: Any, op: str) -> str:
    if section is None:
        return "auto"
    value = section.get(op, "auto") if isinstance(section, dict) else getattr(section, op, "auto")
    return value or "auto"


def _check_pinned(name: str, op: str, device: torch.device, sets: dict[str, type[KernelSet]],
                  usable: dict[str, type[KernelSet]]) -> None:
    options = ", ".join(sorted(usable)) + " (or 'auto')"
    if name not in sets:
        raise EngineUnavailableError(
            f"[kernels] {op} = '{name}': no kernel plugin of that name is installed; available for {op} on "
            f"{device}: {options}")
    cls = sets[name]
    if op not in cls.operations:
        raise EngineUnavailableError(
            f"[kernels] {op} = '{name}': that plugin does not provide '{op}' (it provides "
            f"{', '.join(cls.operations)}); use one of: {options}")
    reason = cls.availability(device, op)
    if reason is not None:
        raise EngineUnavailableError(
            f"[kernels] {op} = '{name}' cannot run on {device}: {reason}; use one of: {options}")
