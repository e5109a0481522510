"""On a CUDA GPU: the mamba-ssm / causal-conv1d / flash-attn kernels agree with the torch reference kernels.

Run: ``python -m pytest tests/gpu/test_kernels_gpu.py -q -s`` (needs mamba-ssm and causal-conv1d; the
flash-attn test needs flash-attn). Every comparison prints the relative error ``||a - b|| / ||b||`` of the
outputs and of every input gradient; the bound is bf16 noise (inputs are bf16, accumulation float32).
"""

from __future__ import annotations

import pytest
import torch

from thinkfast.kernels import TorchKernels, select_kernels

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

DEVICE = torch.device("cuda")
BF16_TOL = 2e-2  # relative L2 error allowed for bf16 inputs


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def _kernels(name: str, op: str):
    return getattr(select_kernels({op: name}, DEVICE), op)


@pytest.fixture(scope="module")
def mamba():
    pytest.importorskip("mamba_ssm")
    pytest.importorskip("causal_conv1d")
    return select_kernels({"ssm": "mamba-ssm", "conv": "mamba-ssm"}, DEVICE)


def _segments(batch: int, seqlen: int, cuts: list[int]) -> torch.Tensor:
    seq_idx = torch.zeros(batch, seqlen, dtype=torch.int32, device=DEVICE)
    for c in cuts:
        seq_idx[:, c:] += 1
    return seq_idx


def _compare(name: str, fn_a, fn_b, inputs: dict[str, torch.Tensor], outputs: tuple[int, ...] = (0,)) -> None:
    """Run both functions on clones of ``inputs``, backprop the same random cotangent, compare everything."""
    results = []
    for fn in (fn_a, fn_b):
        leaves = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
        out = fn(**leaves)
        out = out if isinstance(out, tuple) else (out,)
        loss = sum((out[i].float() * torch.randn(out[i].shape, device=DEVICE,
                    generator=torch.Generator(DEVICE).manual_seed(i))).sum() for i in outputs)
        loss.backward()
        results.append((out, {k: v.grad for k, v in leaves.items() if v.grad is not None}))
    (out_a, grads_a), (out_b, grads_b) = results
    for i in outputs:
        err = rel_err(out_a[i], out_b[i])
        print(f"{name}: output {i} rel err {err:.2e}")
        assert err < BF16_TOL
    for key in grads_b:
        err = rel_err(grads_a[key], grads_b[key])
        print(f"{name}: grad {key} rel err {err:.2e}")
        assert err < BF16_TOL, key


def _ssd_inputs(batch=2, seqlen=300, heads=8, headdim=64, groups=8, dstate=64):
    g = torch.Generator(DEVICE).manual_seed(0)

    def rnd(*shape, dtype=torch.bfloat16, scale=1.0):
        return (torch.randn(*shape, generator=g, device=DEVICE) * scale).to(dtype)

    return {
        "x": rnd(batch, seqlen, heads, headdim), "dt": rnd(batch, seqlen, heads, dtype=torch.float32) - 2.0,
        "A": -torch.rand(heads, generator=g, device=DEVICE) * 4 - 0.5,
        "B": rnd(batch, seqlen, groups, dstate, scale=0.3), "C": rnd(batch, seqlen, groups, dstate, scale=0.3),
        "D": rnd(heads, dtype=torch.float32), "dt_bias": rnd(heads, dtype=torch.float32, scale=0.5),
        "initial_state": rnd(batch, heads, headdim, dstate, dtype=torch.float32),
    }


@pytest.mark.parametrize("with_docs", [False, True])
@pytest.mark.parametrize("groups", [8, 2])
def test_ssd_chunk_scan_forward_backward(mamba, with_docs, groups):
    inputs = _ssd_inputs(groups=groups)
    seq_idx = _segments(2, 300, [70, 128, 129, 250]) if with_docs else None

    def run(kernels):
        return lambda **kw: kernels.ssd_chunk_scan(**kw, chunk_size=64, seq_idx=seq_idx)

    _compare(f"ssd_chunk_scan(groups={groups}, docs={with_docs})", run(mamba.ssm), run(TorchKernels()), inputs,
             outputs=(0, 1))


def test_ssd_step(mamba):
    inputs = _ssd_inputs(seqlen=1)
    state_a = inputs["initial_state"].clone()
    state_b = inputs["initial_state"].clone()
    args = {k: inputs[k][:, 0] for k in ("x", "dt", "B", "C")}
    y_a = mamba.ssm.ssd_step(state_a, **args, A=inputs["A"], D=inputs["D"], dt_bias=inputs["dt_bias"])
    y_b = TorchKernels().ssd_step(state_b, **args, A=inputs["A"], D=inputs["D"], dt_bias=inputs["dt_bias"])
    print(f"ssd_step: y rel err {rel_err(y_a, y_b):.2e}, state rel err {rel_err(state_a, state_b):.2e}")
    assert rel_err(y_a, y_b) < BF16_TOL and rel_err(state_a, state_b) < BF16_TOL


def _conv_inputs(batch=2, seqlen=300, dim=384, width=4):
    g = torch.Generator(DEVICE).manual_seed(1)
    return {
        "x": torch.randn(batch, seqlen, dim, generator=g, device=DEVICE).to(torch.bfloat16),
        "weight": (torch.randn(dim, width, generator=g, device=DEVICE) * 0.5).to(torch.bfloat16),
        "bias": (torch.randn(dim, generator=g, device=DEVICE) * 0.1).to(torch.bfloat16),
    }


@pytest.mark.parametrize("mode", ["docs", "initial_state", "plain"])
def test_causal_conv1d_forward_backward(mamba, mode):
    inputs = _conv_inputs()
    extra = {}
    if mode == "docs":
        extra["seq_idx"] = _segments(2, 300, [70, 128, 129, 250])
    if mode == "initial_state":
        inputs["initial_state"] = torch.randn(2, 384, 3, device=DEVICE).to(torch.bfloat16)
    outputs = (0,) if mode == "docs" else (0, 1)

    def run(kernels):
        return lambda **kw: kernels.causal_conv1d(**kw, activation="silu", **extra)

    _compare(f"causal_conv1d({mode})", run(mamba.conv), run(TorchKernels()), inputs, outputs=outputs)


def test_causal_conv1d_step(mamba):
    inputs = _conv_inputs(seqlen=1)
    state = torch.randn(2, 384, 3, device=DEVICE).to(torch.bfloat16)
    state_b = state.clone()
    y_a = mamba.conv.causal_conv1d_step(inputs["x"][:, 0], state, inputs["weight"], inputs["bias"], activation="silu")
    y_b = TorchKernels().causal_conv1d_step(inputs["x"][:, 0], state_b, inputs["weight"], inputs["bias"],
                                            activation="silu")
    print(f"causal_conv1d_step: rel err {rel_err(y_a, y_b):.2e}")
    assert rel_err(y_a, y_b) < BF16_TOL and torch.equal(state, state_b)


@pytest.mark.parametrize("with_docs", [False, True])
def test_flash_attention_matches_reference(with_docs):
    pytest.importorskip("flash_attn")
    flash = _kernels("flash-attn", "attention")
    g = torch.Generator(DEVICE).manual_seed(2)
    q = torch.randn(2, 300, 8, 64, generator=g, device=DEVICE).to(torch.bfloat16)
    k, v = (torch.randn(2, 300, 2, 64, generator=g, device=DEVICE).to(torch.bfloat16) for _ in range(2))
    seq_idx = _segments(2, 300, [70, 250]) if with_docs else None

    def run(kernels):
        return lambda **kw: kernels.attention_prefill(**kw, scale=0.125, seq_idx=seq_idx)

    _compare(f"attention_prefill(flash, docs={with_docs})", run(flash), run(TorchKernels()), {"q": q, "k": k, "v": v})
    caches = [torch.randn(2, 512, 2, 64, device=DEVICE).to(torch.bfloat16) for _ in range(2)]
    ref_caches = [c.clone() for c in caches]
    positions = torch.tensor([10, 400], device=DEVICE)
    out = flash.attention_decode(q[:, 0], k[:, 0], v[:, 0], *caches, positions, scale=0.125)
    expected = TorchKernels().attention_decode(q[:, 0], k[:, 0], v[:, 0], *ref_caches, positions, scale=0.125)
    print(f"attention_decode(flash): rel err {rel_err(out, expected):.2e}")
    assert rel_err(out, expected) < BF16_TOL and torch.equal(caches[0], ref_caches[0])


def test_llamba_student_same_logits_and_grads_with_either_kernel_set(mamba):
    """A small Llamba-shaped student (bf16): forward + backward with torch vs mamba-ssm kernels."""
    from thinkfast.kernels import Kernels
    from thinkfast.models import ModelConfig, ThinkfastLM, build_student

    torch.manual_seed(0)
    teacher = ThinkfastLM(ModelConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_layers=2,
                                      num_heads=4, num_kv_heads=2, head_dim=64), device=DEVICE, dtype=torch.bfloat16)
    student = build_student(teacher, "llamba", {"chunk_size": 64})
    ids = torch.randint(0, 1000, (2, 300), device=DEVICE)
    doc_ids = _segments(2, 300, [100])
    grads, logits = [], []
    for kernels in (select_kernels({"ssm": "mamba-ssm", "conv": "mamba-ssm"}, DEVICE), Kernels.reference()):
        student.set_kernels(kernels)
        student.zero_grad()
        out = student(ids, doc_ids=doc_ids).logits
        torch.nn.functional.cross_entropy(out.flatten(0, 1).float(), ids.flatten()).backward()
        logits.append(out.detach())
        grads.append({n: p.grad.detach().clone() for n, p in student.named_parameters()})
    print(f"llamba student logits rel err {rel_err(logits[0], logits[1]):.2e}")
    assert rel_err(logits[0], logits[1]) < BF16_TOL
    # Relative error per parameter; gradients whose norm is below 1e-4 (e.g. a dt_bias of norm 5e-6, pure bf16
    # rounding noise) are compared against that floor instead of their own norm.
    def grad_err(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-4)).item()

    errors = sorted(((grad_err(grads[0][n], grads[1][n]), n) for n in grads[1]), reverse=True)
    for err, name in errors[:6]:
        print(f"llamba student grad {name}: rel err {err:.2e} (norm {grads[1][name].float().norm():.3e})")
    worst = errors[0][0]
    print(f"llamba student worst parameter-gradient rel err {worst:.2e}")
    assert worst < 5 * BF16_TOL


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim", "max_len"),
                         [(32, 8, 64, 1100), (24, 8, 128, 300), (9, 3, 64, 64)])
def test_triton_decode_attention_matches_reference(heads, kv_heads, head_dim, max_len):
    """Split-K Triton decode == float64 attention over each row's first positions+1 keys (bf16 inputs)."""
    from thinkfast_plugins.kernels.triton_decode import TritonDecodeKernels

    from thinkfast.kernels.reference import attention_decode

    batch = 5
    q = torch.randn(batch, heads, head_dim, device=DEVICE, dtype=torch.bfloat16)
    k = torch.randn(batch, kv_heads, head_dim, device=DEVICE, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    k_cache = torch.randn(batch, max_len, kv_heads, head_dim, device=DEVICE, dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    positions = torch.randint(0, max_len, (batch,), device=DEVICE)
    positions[0] = 0
    scale = head_dim ** -0.5
    caches = (k_cache.clone(), v_cache.clone())
    got = TritonDecodeKernels().attention_decode(q, k, v, *caches, positions, scale=scale)
    ref_caches = (k_cache.double(), v_cache.double())
    ref = attention_decode(q.double(), k.double(), v.double(), *ref_caches, positions, scale=scale)
    err = rel_err(got, ref)
    print(f"triton decode ({heads}/{kv_heads} heads, dim {head_dim}, len {max_len}): rel err {err:.2e}")
    assert err < BF16_TOL
    assert torch.equal(caches[0].double(), ref_caches[0])  # the new key/value were written at positions


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_triton_ssd_step_matches_reference(state_dtype):
    """The Triton SSD state update == the PyTorch reference (strided x/B/C views, as the model passes them)."""
    g = torch.Generator(DEVICE).manual_seed(3)
    batch, heads, head_dim, dstate, groups = 37, 24, 64, 128, 4
    width = heads * head_dim + 2 * groups * dstate + 11  # a projection row: x | B | C | extra
    proj = torch.randn(batch, width, generator=g, device=DEVICE).to(torch.bfloat16)
    x = proj[:, : heads * head_dim].unflatten(-1, (heads, head_dim))
    B = proj[:, heads * head_dim: heads * head_dim + groups * dstate].unflatten(-1, (groups, dstate))
    C = proj[:, heads * head_dim + groups * dstate: -11].unflatten(-1, (groups, dstate))
    dt = torch.randn(batch, heads, generator=g, device=DEVICE).to(torch.bfloat16)
    A = -torch.rand(heads, generator=g, device=DEVICE) * 4
    D = torch.randn(heads, generator=g, device=DEVICE).to(torch.bfloat16)
    dt_bias = torch.randn(heads, generator=g, device=DEVICE).to(torch.bfloat16)
    state = torch.randn(batch, heads, head_dim, dstate, generator=g, device=DEVICE).to(state_dtype)
    state_ref = state.clone()
    from thinkfast_plugins.kernels.triton_ssm import supports_ssd_step, triton_ssd_step

    assert supports_ssd_step(state, x, dt, B, C)  # the kernel itself runs, not the plugin's fallback
    y = triton_ssd_step(state, x, dt, A, B, C, D=D, dt_bias=dt_bias)
    y_ref = TorchKernels().ssd_step(state_ref, x, dt, A, B, C, D=D, dt_bias=dt_bias)
    print(f"triton ssd_step ({state_dtype}): y rel err {rel_err(y, y_ref):.2e}, "
          f"state rel err {rel_err(state, state_ref):.2e}")
    assert rel_err(y, y_ref) < BF16_TOL and rel_err(state, state_ref) < BF16_TOL


@pytest.mark.parametrize("width", [2, 4])
def test_triton_conv_step_matches_reference(width):
    """The Triton conv step == the PyTorch reference: same output, the same shifted state."""
    inputs = _conv_inputs(seqlen=1, width=width)
    proj = torch.randn(2, 384 + 40, device=DEVICE).to(torch.bfloat16)
    x = proj[:, 8: 8 + 384]  # a strided view, as the model passes it
    state = torch.randn(2, 384, width - 1, device=DEVICE).to(torch.bfloat16)
    state_ref = state.clone()
    from thinkfast_plugins.kernels.triton_ssm import supports_conv_step, triton_conv_step

    assert supports_conv_step(x, state, inputs["weight"])  # the kernel itself runs, not the plugin's fallback
    y = triton_conv_step(x, state, inputs["weight"], inputs["bias"], activation="silu")
    y_ref = TorchKernels().causal_conv1d_step(x, state_ref, inputs["weight"], inputs["bias"], activation="silu")
    print(f"triton conv step (width {width}): rel err {rel_err(y, y_ref):.2e}")
    assert rel_err(y, y_ref) < BF16_TOL and torch.equal(state, state_ref)


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-hybrid"])
def test_compiled_engine_matches_eager_engine_on_gpu(shape):
    """A compiled, graph-captured decode step samples the same tokens as the eager step (float32 model)."""
    from thinkfast.generate.engine import Engine, EngineSettings, Request
    from thinkfast.generate.sampling import SamplingParams
    from thinkfast.profile.shapes import build_shape

    device = torch.device(DEVICE)
    model = build_shape(shape, device, torch.float32).eval()
    model.set_kernels(select_kernels(None, device))
    gen = torch.Generator().manual_seed(0)
    requests = [Request(torch.randint(16, 500, (n,), generator=gen), key=i, sample_indices=(0, 1, 2))
                for i, n in enumerate([5, 9, 7, 3])]
    results = {}
    for compiled in (False, True):
        settings = EngineSettings(batch_size=4, max_seqlen=48, max_new_tokens=24,
                                  sampling=SamplingParams(temperature=1.0), seed=1, eos_ids=(7,), compile=compiled)
        engine = Engine(model, settings)
        assert engine.uses_cuda_graph, engine.graph_error
        assert engine.compile_error is None
        results[compiled] = sorted((f.request, f.sample_index, tuple(f.tokens)) for f in engine.generate(requests))
    assert results[True] == results[False]


def test_a_decode_step_with_the_triton_attention_kernel_compiles_to_one_graph():
    """The triton plugin's decode-attention kernel is captured inside the compiled step (no graph break
    around its launch, which would split the step and stop inductor fusing across it), and the compiled
    step gives the eager step's logits. Its SSD and conv steps are left out of the graph on purpose (see
    ``plugins/kernels/triton_ssm.py``)."""
    from thinkfast.profile.shapes import build_shape

    model = build_shape("smollm2-135m", DEVICE, torch.bfloat16).eval()  # head dim 64: the triton kernel runs
    kernels = select_kernels(None, DEVICE)
    assert kernels.attention.name == "triton"
    model.set_kernels(kernels)
    cache = model.allocate_cache(4, 64, dtype=torch.bfloat16)
    for layer in cache.layers:  # cached keys and values to attend to
        for t in vars(layer).values():
            if isinstance(t, torch.Tensor):
                t.normal_()
    tokens = torch.tensor([3, 4, 5, 6], device=DEVICE)
    positions = torch.tensor([0, 5, 9, 2], device=DEVICE)
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            explanation = torch._dynamo.explain(model.step)(tokens, positions, cache)
            eager = model.step(tokens, positions, cache)  # rewrites the same keys and values: repeatable
            compiled = torch.compile(model.step, dynamic=False)(tokens, positions, cache)
    finally:
        torch._dynamo.reset()
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    print(f"compiled vs eager step with the triton attention: rel err {rel_err(compiled, eager):.2e}")
    assert rel_err(compiled, eager) < BF16_TOL
