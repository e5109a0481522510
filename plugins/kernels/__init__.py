"""Built-in kernel plugins: ``torch`` (reference, any device), ``sdpa``, ``mamba-ssm`` and ``flash-attn``.

The CUDA packages (mamba-ssm, causal-conv1d, flash-attn) are imported lazily, inside the calls and
the availability checks, so this module imports everywhere.
"""

from thinkfast_plugins.kernels.flash import FlashAttnKernels
from thinkfast_plugins.kernels.mamba import MambaSsmKernels
from thinkfast_plugins.kernels.sdpa import SdpaKernels

from thinkfast.hookspecs import hookimpl
from thinkfast.kernels import TorchKernels


@hookimpl
def register_kernels(register):
    """The four built-in kernel sets."""
    register("torch", TorchKernels)
    register("sdpa", SdpaKernels)
    register("mamba-ssm", MambaSsmKernels)
    register("flash-attn", FlashAttnKernels)
