"""Kernels: the interface (:class:`KernelSet`), the pure-PyTorch reference, and per-operation selection."""

from thinkfast.kernels.base import OPERATIONS, Kernels, KernelSet, TorchKernels
from thinkfast.kernels.select import select_kernels

__all__ = ["OPERATIONS", "KernelSet", "Kernels", "TorchKernels", "select_kernels"]
