"""Asking kernel plugins what they provide, with their answers checked: a plugin's bug is one message.

:func:`~thinkfast.kernels.select.select_kernels` asks every registered kernel set (auto selection) or the
pinned one what it provides (``operations``), whether it can run (``availability``, which must never raise),
how it ranks (``priority``), and creates the chosen ones. :class:`KernelProbe` makes those calls: an
exception from the plugin's code, an operation it lists but does not implement, an unknown operation, an
availability that is not None or a sentence, or a priority that is not a number is a
:class:`~thinkfast.plugin_guard.PluginError` naming the kernel plugin and its package.

The operations themselves (``ssd_chunk_scan``... inside a model's forward pass, maybe inside a compiled
graph) are not wrapped: an exception from a third-party kernel's code there is named by the CLI's last resort,
:func:`thinkfast.plugin_guard.third_party_error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thinkfast.kernels.base import OPERATIONS, KernelSet
from thinkfast.plugin_guard import PluginError, calling, describe, plugin_error

if TYPE_CHECKING:
    import torch

    from thinkfast.registry import PluginEntry

#: The methods a kernel set must override for each operation it lists.
METHODS = {"ssm": ("ssd_chunk_scan", "ssd_step"), "conv": ("causal_conv1d", "causal_conv1d_step"),
           "attention": ("attention_prefill", "attention_decode")}


@dataclass
class KernelProbe:
    """One kernel set class; ``entry`` is its registry entry (None for a set the caller handed in directly,
    which is called unguarded)."""

    cls: Any
    entry: PluginEntry | None = None

    def checked(self) -> KernelProbe:
        """Check what the class declares (a registered plugin only); returns ``self``."""
        if self.entry is None:
            return self
        if not (isinstance(self.cls, type) and issubclass(self.cls, KernelSet)):
            raise self.error(f"registers {describe(self.cls)}, not a subclass of thinkfast.kernels.KernelSet")
        ops = self.cls.operations
        if not isinstance(ops, (tuple, list)) or any(op not in OPERATIONS for op in ops):
            raise self.error(f"lists operations {ops!r}; it must be a tuple of some of {', '.join(OPERATIONS)}")
        for op in ops:
            missing = [m for m in METHODS[op] if getattr(self.cls, m) is getattr(KernelSet, m)]
            if missing:
                raise self.error(f"lists the operation {op!r} but does not implement {', '.join(missing)}")
        return self

    @property
    def operations(self) -> tuple[str, ...]:
        return tuple(self.cls.operations)

    def availability(self, device: torch.device, op: str) -> str | None:
        if self.entry is None:
            return self.cls.availability(device, op)
        with calling(self.entry, f"availability({str(device)!r}, {op!r}), which must never raise,"):
            reason = self.cls.availability(device, op)
        if reason is not None and not isinstance(reason, str):
            raise self.error(f"availability({str(device)!r}, {op!r}) returned {describe(reason)}; it must return "
                             f"None (available) or a sentence saying why not")
        return reason

    def priority(self, op: str, device: torch.device) -> float:
        if self.entry is None:
            return self.cls.priority(op, device)
        with calling(self.entry, "priority()"):
            rank = self.cls.priority(op, device)
        if isinstance(rank, bool) or not isinstance(rank, (int, float)):
            raise self.error(f"priority({op!r}, {str(device)!r}) returned {describe(rank)}; it must return a "
                             f"number (higher wins)")
        return rank

    def create(self) -> KernelSet:
        if self.entry is None:
            return self.cls()
        with calling(self.entry, "creating it"):
            return self.cls()

    def error(self, what: str) -> PluginError:
        return plugin_error(self.entry, what)
