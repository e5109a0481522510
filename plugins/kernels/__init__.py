"""Built-in kernel plugins: ``torch`` (reference, any device), ``sdpa``, ``triton``, ``mamba-ssm`` and ``flash-attn``.

The CUDA packages (mamba-ssm, causal-conv1d, flash-attn, triton) are imported lazily, inside the calls and
the availability checks, so this module imports everywhere.
"""

from thinkfast_plugins.kernels.flash import FlashAttnKernels
from thinkfast_plugins.kernels.mamba import MambaSsmKernels
from thinkfast_plugins.kernels.sdpa import SdpaKernels
from thinkfast_plugins.kernels.triton_decode import TritonDecodeKernels

from thinkfast.hookspecs import hookimpl
from thinkfast.kernels import TorchKernels


@hookimpl
def register_kernels(register):
    """The five built-in kernel sets."""
    register("torch", TorchKernels)
    register("sdpa", SdpaKernels)
    register("triton", TritonDecodeKernels)
    register("mamba-ssm", MambaSsmKernels)
    register("flash-attn", FlashAttnKernels)
