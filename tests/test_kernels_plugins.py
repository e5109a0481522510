"""Kernel plugins on CPU: registration, selection, errors, and sdpa == reference."""

from __future__ import annotations

import os

import pytest
import torch

from thinkfast.config import from_dict
from thinkfast.config.common import KernelsSection
from thinkfast.errors import EngineUnavailableError
from thinkfast.kernels import Kernels, TorchKernels, select_kernels
from thinkfast.kernels import reference as ref
from thinkfast.models import ModelConfig, ThinkfastLM, build_student
from thinkfast.registry import get_registry


def test_builtin_kernel_plugins_are_registered():
    assert {"torch", "sdpa", "triton", "mamba-ssm", "flash-attn"} <= set(get_registry().names("kernels"))


def test_auto_selection_on_cpu_and_pinning():
    assert select_kernels(None, "cpu").names() == {"ssm": "torch", "conv": "torch", "attention": "sdpa"}
    section = from_dict(KernelsSection, {"attention": "torch"})
    assert select_kernels(section, "cpu").names()["attention"] == "torch"


@pytest.mark.parametrize(("pinned", "message"), [
    ({"ssm": "mamba-ssm"}, "cannot run on cpu: it needs a CUDA device"),
    ({"attention": "flash-attn"}, "cannot run on cpu"),
    ({"attention": "triton"}, "cannot run on cpu: it needs a CUDA device"),
    ({"conv": "sdpa"}, "does not provide 'conv'"),
    ({"attention": "nope"}, "no kernel plugin of that name"),
])
def test_unavailable_kernels_are_clear_errors(pinned, message):
    with pytest.raises(EngineUnavailableError, match=message):
        select_kernels(pinned, "cpu")


def test_availability_checks_never_raise_without_cuda():
    registry = get_registry()
    for name in registry.names("kernels"):
        cls = registry.get("kernels", name)
        for op in cls.operations:
            reason = cls.availability(torch.device("cuda"), op)
            assert reason is None or isinstance(reason, str)


def test_triton_availability_is_a_reason_when_its_kernels_cannot_be_defined(monkeypatch):
    """``availability`` also defines the Triton kernels (outside any compiled trace); a definition that fails
    (Triton imports but its decorator does not take the kernel, a source-less install) must be the reason
    the set is unavailable, not an exception out of a check that must never raise."""
    import thinkfast_plugins.kernels.triton_decode as triton_decode

    def broken():
        raise RuntimeError("@triton.jit: could not get source code")

    monkeypatch.setattr(triton_decode, "cuda_module_unavailable", lambda device, *modules: None)
    monkeypatch.setattr(triton_decode, "partial_kernel", broken)
    reason = triton_decode.TritonDecodeKernels.availability(torch.device("cuda"), "attention")
    assert reason == ("its Triton kernels cannot be defined (RuntimeError: @triton.jit: could not get source "
                      "code)")


def test_sdpa_matches_reference_attention():
    sdpa = select_kernels({"attention": "sdpa"}, "cpu").attention
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 12, 4, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 12, 2, 8, generator=g, dtype=torch.float64) for _ in range(2))
    seq_idx = torch.tensor([[0] * 5 + [1] * 7, [0] * 12])
    for docs in (None, seq_idx):
        torch.testing.assert_close(sdpa.attention_prefill(q, k, v, scale=0.3, seq_idx=docs),
                                   ref.attention_prefill(q, k, v, scale=0.3, seq_idx=docs))
    caches = [torch.randn(2, 16, 2, 8, generator=g, dtype=torch.float64) for _ in range(4)]
    caches[2].copy_(caches[0])
    caches[3].copy_(caches[1])
    positions = torch.tensor([3, 11])
    out = sdpa.attention_decode(q[:, 0], k[:, 0], v[:, 0], caches[0], caches[1], positions, scale=0.3)
    expected = ref.attention_decode(q[:, 0], k[:, 0], v[:, 0], caches[2], caches[3], positions, scale=0.3)
    torch.testing.assert_close(out, expected)
    assert torch.equal(caches[0], caches[2])


def test_model_runs_with_selected_kernels():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2,
                         num_kv_heads=1, head_dim=8)
    teacher = ThinkfastLM(config, dtype=torch.float64)
    hybrid = build_student(teacher, "mambainllama", {"attention_layers": [0], "chunk_size": 8})
    ids = torch.randint(0, 50, (2, 9))
    reference = hybrid(ids, doc_ids=torch.tensor([[0] * 4 + [1] * 5] * 2)).logits
    hybrid.set_kernels(select_kernels(None, "cpu"))
    assert hybrid.layers[0].mixer.kernels.attention.name == "sdpa"
    torch.testing.assert_close(hybrid(ids, doc_ids=torch.tensor([[0] * 4 + [1] * 5] * 2)).logits, reference)
    hybrid.set_kernels(Kernels.reference())
    assert isinstance(hybrid.layers[1].mixer.kernels.ssm, TorchKernels)


def test_flash_cu_seqlens_helper():
    from thinkfast_plugins.kernels.flash import cu_seqlens_from_segments

    cu, longest = cu_seqlens_from_segments(torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]]))
    assert cu.tolist() == [0, 2, 5, 6, 10] and longest == 4


@pytest.mark.parametrize("shape", [(1, 1, 16), (2, 1, 16), (1, 5, 16), (3, 7, 24)])
def test_channel_last_layout_for_causal_conv1d(shape):
    """causal-conv1d's channel-last path needs stride(1) == 1 and batch/position strides that are multiples
    of 8. A slice of a projection of odd width fails that, also with size-1 dims (which ``contiguous()``
    keeps as they are): the helper hands the kernel a copy with canonical strides, the same values."""
    from thinkfast_plugins.kernels.mamba import _channel_last

    b, length, d = shape
    proj = torch.randn(b, length, 2 * d + 5)  # odd width: a slice of it has unaligned strides
    x = proj[..., 3:3 + d]
    xt = _channel_last(x)
    assert xt.shape == (b, d, length) and torch.equal(xt, x.transpose(1, 2))
    assert xt.stride(1) == 1 and xt.stride(0) % 8 == 0 and xt.stride(2) % 8 == 0
    aligned = torch.randn(b, length, d)  # already qualifies: no copy
    assert _channel_last(aligned).data_ptr() == aligned.data_ptr()
    assert _channel_last(torch.randn(b, length, d + 3)) is None  # no channel-last layout exists


_INTERPRETER_CHECK = """
import torch
from thinkfast.kernels import reference
from thinkfast_plugins.kernels.triton_ssm import triton_conv_step, triton_ssd_step

gen = torch.Generator().manual_seed(0)
for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
    for width, channels_contiguous in ((2, False), (4, False), (4, True)):
        proj = torch.randn(3, 317, generator=gen).to(dtype)
        x = proj[:, 5:305]  # a strided view of a projection row, as the model passes it
        state = torch.randn(3, 300, width - 1, generator=gen).to(dtype)
        if channels_contiguous:  # the model's cache layout
            state = state.transpose(1, 2).contiguous().transpose(1, 2)
        weight = torch.randn(300, width, generator=gen).to(dtype)
        bias = torch.randn(300, generator=gen).to(dtype)
        state_ref = state.clone()
        got = triton_conv_step(x, state, weight, bias, activation="silu")
        want = reference.causal_conv1d_step(x, state_ref, weight, bias, activation="silu")
        assert torch.allclose(got.float(), want.float(), rtol=tol, atol=tol), ("conv", dtype, width)
        assert torch.equal(state, state_ref), ("conv state", dtype, width)
    batch, heads, head_dim, dstate, groups = 3, 6, 20, 24, 2
    state = torch.randn(batch, heads, head_dim, dstate, generator=gen).to(dtype)
    state_ref = state.clone()
    x = torch.randn(batch, heads, head_dim, generator=gen)
    dt, A = torch.randn(batch, heads, generator=gen), -torch.rand(heads, generator=gen) * 3
    B, C = torch.randn(batch, groups, dstate, generator=gen), torch.randn(batch, groups, dstate, generator=gen)
    D, dt_bias = torch.randn(heads, generator=gen), torch.randn(heads, generator=gen)
    got = triton_ssd_step(state, x, dt, A, B, C, D=D, dt_bias=dt_bias)
    want = reference.ssd_step(state_ref, x, dt, A, B, C, D=D, dt_bias=dt_bias)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), ("ssd y", dtype)
    assert torch.allclose(state.float(), state_ref.float(), rtol=tol, atol=tol), ("ssd state", dtype)
print("ok")
"""


def test_triton_ssm_steps_match_reference_in_interpreter():
    """The Triton conv-step and SSD-step kernels, run by Triton's interpreter on CPU tensors, equal the
    PyTorch reference (strided inputs, in-place states, float32 and bfloat16). Needs Triton installed
    (not in `make test`'s environment: the wheel is 1 GB); the GPU tests compare the compiled kernels."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed (pip install triton to run the kernels in its interpreter)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # read when Triton is first imported: a fresh process
    result = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
