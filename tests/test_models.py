"""ThinkfastLM: prefill + steps == forward, batched == per-prompt prefill, packed documents, matrices,
save/load (tiny float64 models)."""

from __future__ import annotations

import pytest
import torch

from thinkfast.errors import ModelLoadError
from thinkfast.models import ModelConfig, ThinkfastLM, build_student, load_model, save_model
from thinkfast.models.cache import AttentionCache

KINDS = {"transformer": {}, "mambainllama": {"attention_layers": [1], "chunk_size": 8},
         "llamba": {"chunk_size": 8, "state_size": 6, "expand": 1.5, "num_heads": 4, "num_bc_groups": 2}}


def tiny_config(**changes) -> ModelConfig:
    base = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2,
                head_dim=8, rope_theta=500.0, tie_embeddings=True,
                rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    base.update(changes)
    return ModelConfig(**base)


@pytest.fixture(scope="module")
def teacher() -> ThinkfastLM:
    torch.manual_seed(0)
    model = ThinkfastLM(tiny_config(), dtype=torch.float64)
    with torch.no_grad():  # larger weights than the N(0, 0.02) default so that errors are visible
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module", params=list(KINDS))
def student(request, teacher) -> ThinkfastLM:
    torch.manual_seed(1)
    model = build_student(teacher, request.param, KINDS[request.param])
    with torch.no_grad():  # make the SSM parts non-trivial (decay, gate)
        for block in model.layers:
            if block.kind == "ssm":
                block.mixer.D.normal_()
                block.mixer.in_proj.weight.normal_(0.0, 0.3)
    return model


def test_student_kinds_have_expected_mixers(teacher):
    assert build_student(teacher, "transformer").config.mixers == ["attention"] * 3
    assert build_student(teacher, "mambainllama", KINDS["mambainllama"]).config.mixers == ["ssm", "attention", "ssm"]
    llamba = build_student(teacher, "llamba", KINDS["llamba"])
    assert llamba.config.mixers == ["ssm"] * 3 and llamba.config.student == "llamba"
    assert (llamba.config.ssm.head_dim, llamba.config.ssm.state_size) == (12, 6)


def test_prefill_then_steps_equals_forward(student):
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 97, (2, 23), generator=g)
    full = student(ids).logits  # (2, 23, V)
    cache = student.allocate_cache(4, 32)
    prompt = 13
    slots = {0: torch.tensor([0, 3]), 1: torch.tensor([1])}
    for row, row_slots in slots.items():
        first = student.prefill(ids[row, :prompt], cache, row_slots)
        assert first.shape == (len(row_slots), 97)
        torch.testing.assert_close(first, full[row, prompt - 1].expand_as(first), atol=1e-10, rtol=0)
    worst = 0.0
    for pos in range(prompt, 23):
        tokens = torch.stack([ids[0, pos], ids[1, pos], torch.tensor(0), ids[0, pos]])
        positions = torch.tensor([pos, pos, 0, pos])
        logits = student.step(tokens, positions, cache)
        for slot, row in ((0, 0), (1, 1), (3, 0)):
            worst = max(worst, (logits[slot] - full[row, pos]).abs().max().item())
    print(f"{student.config.student}: prefill + 10 steps vs forward, max abs logit diff {worst:.2e}")
    assert worst < 1e-9


def _slot_state(cache, slot: int, length: int) -> list[torch.Tensor]:
    """Everything a prefill of a ``length``-token prompt wrote for ``slot``: KV rows, conv and SSM state."""
    out = []
    for layer in cache.layers:
        if isinstance(layer, AttentionCache):
            out += [layer.k[slot, :length], layer.v[slot, :length]]
        else:
            out += [t[slot] for t in (layer.conv_state, layer.ssm_state) if t is not None]
    return out


def _noisy_cache(model, batch: int, max_seqlen: int):
    """A cache full of noise, so that a prefill that forgets to write something is caught."""
    cache = model.allocate_cache(batch, max_seqlen)
    for layer in cache.layers:
        for t in vars(layer).values():
            if isinstance(t, torch.Tensor):
                t.normal_()
    return cache


def _check_batched_prefill(model, lengths: list[int], same: int, assert_close) -> None:
    """Per-prompt prefill of random prompts (prompt ``i`` into slots ``2i``, ``2i + 1``) vs (a) one batched
    prefill of the prompts of length ``same`` with ``slots (P, n)`` and (b) one left-padded prefill of all
    prompts with ``slots``/``rows`` in shuffled order; ``assert_close(got, want, what)`` compares."""
    device = model.embed_tokens.weight.device
    vocab = model.config.vocab_size
    g = torch.Generator(device).manual_seed(8)
    prompts = [torch.randint(0, vocab, (n,), generator=g, device=device) for n in lengths]
    width, batch = max(lengths), 2 * len(lengths)
    alone = _noisy_cache(model, batch, width + 3)
    expected = [model.prefill(p, alone, torch.tensor([2 * i, 2 * i + 1], device=device))
                for i, p in enumerate(prompts)]

    def check(cache, slot: int, i: int, logits: torch.Tensor, form: str) -> None:
        assert_close(logits, expected[i][0], f"{form}: logits of prompt {i}")
        for got, want in zip(_slot_state(cache, slot, lengths[i]), _slot_state(alone, 2 * i, lengths[i]),
                             strict=True):
            assert_close(got, want, f"{form}: state of prompt {i} in slot {slot}")

    # equal lengths: prompts (P, L), slots (P, n)
    rows = [i for i, n in enumerate(lengths) if n == same]
    cache = _noisy_cache(model, batch, width + 3)
    grid = torch.tensor([[2 * i + 1, 2 * i] for i in rows], device=device)
    logits = model.prefill(torch.stack([prompts[i] for i in rows]), cache, grid)
    assert logits.shape == (len(rows), 2, vocab)
    for r, i in enumerate(rows):
        for col in range(2):
            check(cache, int(grid[r, col]), i, logits[r, col], "equal lengths")

    # different lengths, left-padded with random tokens; any number of slots per prompt, in any order
    padded = torch.randint(0, vocab, (len(prompts), width), generator=g, device=device)
    for i, p in enumerate(prompts):
        padded[i, width - len(p):] = p
    order = torch.randperm(batch, generator=torch.Generator().manual_seed(9))[: batch - 2]
    slots, rows_t = order.to(device), (order // 2).to(device)
    cache = _noisy_cache(model, batch, width + 3)
    logits = model.prefill(padded, cache, slots, rows_t, lengths=torch.tensor(lengths, device=device))
    assert logits.shape == (len(slots), vocab)
    for k in range(len(slots)):
        check(cache, int(slots[k]), int(rows_t[k]), logits[k], "left-padded")
    # the padding really is there: without lengths the shortest prompt sees it
    short = lengths.index(min(lengths))
    plain = model.prefill(padded, _noisy_cache(model, batch, width + 3), slots, rows_t)
    k = int((rows_t == short).nonzero()[0])
    assert (plain[k] - expected[short][0]).abs().max() > 1e-3


@pytest.mark.parametrize("kernels", ["torch", "auto"])  # auto on a CPU: sdpa attention
def test_batched_prefill_equals_per_prompt_prefill(student, kernels):
    from thinkfast.kernels import Kernels, select_kernels

    def close(got, want, what):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0, msg=what)

    student.set_kernels(Kernels.reference() if kernels == "torch" else select_kernels(None, "cpu"))
    try:  # equal and different lengths; 2 and 1 are shorter than the conv window
        _check_batched_prefill(student, [13, 13, 5, 13, 2, 9, 1], 13, close)
    finally:
        student.set_kernels(Kernels.reference())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", list(KINDS))
def test_batched_prefill_equals_per_prompt_prefill_on_gpu(kind):
    """bf16 with the kernels chosen for CUDA (mamba-ssm scan with seq_idx, causal-conv1d, flash-attn varlen when
    installed): batched and left-padded prefill agree with per-prompt prefill within bf16 noise."""
    from thinkfast.kernels import select_kernels

    torch.manual_seed(0)
    teacher = ThinkfastLM(tiny_config(vocab_size=512, hidden_size=256, intermediate_size=512, num_heads=4,
                                      num_kv_heads=2, head_dim=64), device="cuda", dtype=torch.bfloat16)
    options = {} if kind == "transformer" else {"chunk_size": 64}
    if kind == "mambainllama":
        options["attention_layers"] = [1]
    model = build_student(teacher, kind, options).eval()
    model.set_kernels(select_kernels(None, "cuda"))
    print(f"{kind}: kernels {model.kernels.names()}")
    worst: dict[str, float] = {}

    def close(got, want, what):
        err = ((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-12)).item()
        worst[what.split(":")[0]] = max(worst.get(what.split(":")[0], 0.0), err)
        assert err < 2e-2, f"{what}: relative error {err:.2e}"

    with torch.no_grad():
        _check_batched_prefill(model, [150, 150, 37, 150, 3, 200, 1], 150, close)
    print(f"{kind}: worst relative error {worst}")


def test_batched_prefill_rejects_ambiguous_slots(student):
    cache = student.allocate_cache(4, 8)
    prompts = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="rows"):
        student.prefill(prompts, cache, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one row per prompt"):
        student.prefill(prompts, cache, torch.tensor([[0, 1, 2]]))


def test_packed_documents_are_isolated(student):
    g = torch.Generator().manual_seed(6)
    a, b = torch.randint(0, 97, (1, 11), generator=g), torch.randint(0, 97, (1, 14), generator=g)
    packed = torch.cat([a, b], dim=1)
    doc_ids = torch.tensor([[7] * 11 + [3] * 14])
    out = student(packed, doc_ids=doc_ids).logits
    torch.testing.assert_close(out[:, :11], student(a).logits, atol=1e-10, rtol=0)
    torch.testing.assert_close(out[:, 11:], student(b).logits, atol=1e-10, rtol=0)
    # without doc ids the second document does see the first
    assert (student(packed).logits[:, 11:] - out[:, 11:]).abs().max() > 1e-4


def test_hidden_states_and_matrices(student):
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(7))
    out = student(ids, output_hidden_states=True)
    assert len(out.hidden_states) == student.config.num_layers + 1
    for i, block in enumerate(student.layers):
        x = out.hidden_states[i]
        torch.testing.assert_close(block(x), out.hidden_states[i + 1])
        normed = block.input_layernorm(x)
        if block.kind == "attention":
            probs = block.mixer.attention_matrix(normed)
            assert probs.shape == (2, 4, 10, 10)
            torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 10, dtype=probs.dtype))
            assert probs.triu(1).abs().max() == 0
        else:
            mixer = block.mixer
            M = mixer.mixing_matrix(normed)  # (b, h, l, l)
            # M applied to the conv'd x heads plus the D skip reproduces the scan output
            _, xbc, _ = mixer._project(normed)
            xbc, _ = mixer._conv(xbc)
            xh, _, _ = mixer._split_xbc(xbc)
            y_from_M = torch.einsum("bhij,bjhp->bihp", M.double(), xh) + mixer.D[:, None] * xh
            y_scan, _ = mixer._scan(*_scan_args(mixer, normed))
            torch.testing.assert_close(y_from_M, y_scan, atol=1e-6, rtol=1e-6)


def _scan_args(mixer, normed):
    _, xbc, dt = mixer._project(normed)
    xbc, _ = mixer._conv(xbc)
    x, B, C = mixer._split_xbc(xbc)
    return x, dt, B, C


def test_saved_weights_file_is_as_readable_as_the_config(student, tmp_path):
    """safetensors writes its file as 0600 whatever the umask: the student directory must be readable by
    whoever can read its config.json (a shared cluster, another user's evaluate)."""
    import os
    import stat

    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):  # a shared machine's usual umask, a group-only one
        previous = os.umask(umask)  # (under 0o077 every file is 0600 and this would show nothing)
        try:
            save_model(student, None, tmp_path / f"m{umask:o}")
            assert os.umask(umask) == umask  # reading the umask left it as it was
        finally:
            os.umask(previous)
        modes = {name: stat.S_IMODE((tmp_path / f"m{umask:o}" / name).stat().st_mode)
                 for name in ("config.json", "model.safetensors")}
        assert modes == {"config.json": mode, "model.safetensors": mode}, (oct(umask), modes)


def test_save_load_round_trip_is_bit_exact(student, tmp_path):
    save_model(student, None, tmp_path / "m")
    loaded, tokenizer = load_model(tmp_path / "m")
    assert tokenizer is None and loaded.config == student.config
    for (name, p), (name2, q) in zip(student.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert name == name2 and p.dtype == q.dtype and torch.equal(p, q), name
    ids = torch.randint(0, 97, (1, 9))
    assert torch.equal(loaded(ids).logits, student(ids).logits)
    if student.config.tie_embeddings:
        assert loaded.lm_head.weight.data_ptr() == loaded.embed_tokens.weight.data_ptr()


def test_load_model_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelLoadError, match="not a thinkfast model directory"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "thinkfast", "vocab_size": 3, "bogus": 1}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="unknown keys"):
        load_model(tmp_path)


def test_invalid_config_is_rejected():
    with pytest.raises(ModelLoadError, match="mixers"):
        tiny_config(mixers=["attention", "ssm", "conv"])


def test_meta_construction_and_dtype():
    model = ThinkfastLM(tiny_config(), device="meta")
    assert model.embed_tokens.weight.is_meta
    bf16 = ThinkfastLM(tiny_config(), dtype=torch.bfloat16)
    assert bf16.layers[0].mixer.rotary.inv_freq.dtype == torch.float32
    assert bf16(torch.randint(0, 97, (1, 5))).logits.dtype == torch.bfloat16


@pytest.mark.parametrize("bias", [False, True])
def test_fused_linear_gives_each_output_and_shares_the_parameters(bias):
    from thinkfast.models.fused import FusedLinear

    torch.manual_seed(0)
    linears = [torch.nn.Linear(16, n, bias=bias, dtype=torch.float64) for n in (5, 3, 5)]  # 13 columns
    x = torch.randn(4, 16, dtype=torch.float64)
    want = [lin(x) for lin in linears]
    params = [p for lin in linears for p in lin.parameters()]
    fused = FusedLinear(linears, multiple=8)
    assert [p for lin in linears for p in lin.parameters()] == params  # the same Parameter objects
    assert fused.weight.shape == (16, 16) and not fused.weight[13:].any()  # zero rows pad 13 to 16
    got = fused(x)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=0)
        assert g.stride(0) == 16  # views of the padded (4, 16) product
    with torch.no_grad():  # a parameter updated in place is the fused matrix updated
        linears[1].weight.mul_(2.0)
    torch.testing.assert_close(fused(x)[1], linears[1](x), atol=1e-12, rtol=0)
    torch.testing.assert_close(fused(x)[1], 2 * want[1] - (linears[1].bias if bias else 0), atol=1e-12, rtol=0)


def test_fused_linear_rejects_linears_that_cannot_share_a_gemm():
    from thinkfast.models.fused import FusedLinear

    with pytest.raises(ValueError, match="input size"):
        FusedLinear([torch.nn.Linear(4, 2), torch.nn.Linear(5, 2)])
    with pytest.raises(ValueError, match="bias"):
        FusedLinear([torch.nn.Linear(4, 2), torch.nn.Linear(4, 2, bias=False)])


def _odd_in_proj_llamba(device: str, dtype: torch.dtype) -> ThinkfastLM:
    """A Llamba student whose ``in_proj`` is 2313 columns wide (9 heads of 64, like Llamba-135M)."""
    torch.manual_seed(0)
    teacher = ThinkfastLM(tiny_config(vocab_size=512, hidden_size=576, intermediate_size=512, num_heads=9,
                                      num_kv_heads=3, head_dim=64), device=device, dtype=dtype)
    model = build_student(teacher, "llamba", {}).eval()
    assert model.layers[0].mixer.in_proj.out_features == 2313
    return model


def _prefill_and_step_logits(model: ThinkfastLM, device: str) -> torch.Tensor:
    """Logits ``(2, 4, V)`` float32 of a 12-token prefill into 4 slots and of one decode step after it."""
    dtype = next(model.parameters()).dtype
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    cache = model.allocate_cache(4, 32, dtype=dtype, state_dtype=state_dtype)
    with torch.no_grad():
        first = model.prefill(torch.arange(3, 15, device=device), cache, torch.arange(4, device=device))
        step = model.step(torch.arange(4, device=device), torch.full((4,), 12, device=device), cache)
    return torch.stack([first, step]).float()


def _count_fused_calls(monkeypatch) -> list[int]:
    """Patch ``FusedLinear.__call__`` to count its calls (in ``counter[0]``)."""
    from thinkfast.models.fused import FusedLinear

    counter = [0]
    original = FusedLinear.__call__

    def counting(self, x):
        counter[0] += 1
        return original(self, x)

    monkeypatch.setattr(FusedLinear, "__call__", counting)
    return counter


def _fusable_copy(kind: str, teacher: ThinkfastLM) -> ThinkfastLM:
    import copy

    if kind == "odd-llamba":
        return _odd_in_proj_llamba("cpu", torch.float64)
    torch.manual_seed(1)
    if kind == "transformer":
        return copy.deepcopy(teacher)
    return build_student(copy.deepcopy(teacher), kind, KINDS[kind]).eval()


@pytest.mark.parametrize("kind", ["transformer", "mambainllama", "odd-llamba"])
def test_fused_projections_give_the_same_logits_and_checkpoint(kind, teacher, tmp_path, monkeypatch):
    """Fused q/k/v and a padded in_proj (forced to 8 columns on the CPU): same prefill and step logits
    (float64), same parameters and state_dict; the fused products are what prefill and step ran, and
    ``forward`` (training, scoring) never runs them."""
    model = _fusable_copy(kind, teacher)
    want, params = _prefill_and_step_logits(model, "cpu"), list(model.parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.fuse_projections(8)
    mixers = [block.mixer for block in model.layers]
    fused = [m.fused_qkv if m.__class__.__name__ == "Attention" else m.padded_in_proj for m in mixers]
    # attention always; an SSM in_proj only when its width is not a multiple of 8 already
    assert [f is not None for f in fused] == [not hasattr(m, "in_proj") or m.in_proj.out_features % 8 > 0
                                              for m in mixers]
    if kind == "odd-llamba":
        assert all(f.weight.shape[0] == 2320 for f in fused)
    calls = _count_fused_calls(monkeypatch)
    torch.testing.assert_close(_prefill_and_step_logits(model, "cpu"), want, atol=1e-12, rtol=0)
    assert calls[0] == 2 * sum(f is not None for f in fused)  # once per fused mixer in prefill and in step
    with torch.no_grad():
        model(torch.arange(3, 15)[None])
    assert calls[0] == 2 * sum(f is not None for f in fused)  # forward: the linears themselves
    assert list(model.parameters()) == params
    assert model.state_dict().keys() == state.keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    save_model(model, None, tmp_path / "m")  # views of one matrix save as separate tensors
    loaded, _ = load_model(tmp_path / "m")
    torch.testing.assert_close(_prefill_and_step_logits(loaded, "cpu"), want, atol=1e-12, rtol=0)


def test_fused_model_trains_and_refuses_after_to_and_load_state_dict(teacher):
    """Gradients still reach the parameters; an optimizer step shows in the fused path; ``.to()`` and
    ``load_state_dict(assign=True)`` re-fuse the new storage, while an in-place ``load_state_dict`` or a
    ``.to()`` that changes nothing keeps the parameters (and the fused matrices) where they are."""
    import copy

    model = copy.deepcopy(teacher).fuse_projections(8)
    attn = model.layers[0].mixer
    want = _prefill_and_step_logits(model, "cpu")
    model(torch.randint(0, 97, (2, 9))).logits.square().mean().backward()
    assert attn.q_proj.weight.grad is not None and attn.q_proj.weight.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    stepped = _prefill_and_step_logits(model, "cpu")
    assert not torch.allclose(stepped, want)
    torch.testing.assert_close(stepped, _prefill_and_step_logits(copy.deepcopy(model).unfuse_projections(), "cpu"),
                               atol=1e-12, rtol=0)
    address, fused = attn.q_proj.weight.data_ptr(), attn.fused_qkv
    model.load_state_dict(model.state_dict())
    model.to(torch.float64)
    assert attn.q_proj.weight.data_ptr() == address and attn.fused_qkv is fused
    model.to(torch.float32)
    assert model.fused_multiple == 8 and attn.fused_qkv.weight.dtype == torch.float32
    assert attn.fused_qkv.is_current() and attn.q_proj.weight.data_ptr() == attn.fused_qkv.weight.data_ptr()
    other = ThinkfastLM(tiny_config())
    model.load_state_dict(other.state_dict(), assign=True)
    assert attn.fused_qkv.is_current()
    assert attn.k_proj.weight.data_ptr() == attn.fused_qkv.weight.data_ptr() + attn.q_proj.weight.numel() * 4
    torch.testing.assert_close(_prefill_and_step_logits(model, "cpu"), _prefill_and_step_logits(other, "cpu"),
                               atol=1e-6, rtol=0)


def test_stale_or_copied_fusions_are_detected_and_redone(teacher):
    """Storage replaced behind the model's back (a submodule's ``load_state_dict(assign=True)``) leaves a
    fusion stale: ``is_current`` says so and the next ``prefill`` redoes it. Copies come unfused, and a
    fusion made inside ``torch.inference_mode`` leaves the parameters trainable."""
    import copy
    import pickle

    model = _fusable_copy("odd-llamba", teacher).fuse_projections(8)
    mixer = model.layers[0].mixer
    fresh = torch.nn.Linear(576, 2313, bias=False, dtype=torch.float64)
    mixer.in_proj.load_state_dict(fresh.state_dict(), assign=True)
    assert not mixer.padded_in_proj.is_current()
    want = _prefill_and_step_logits(copy.deepcopy(model).unfuse_projections(), "cpu")
    torch.testing.assert_close(_prefill_and_step_logits(model, "cpu"), want, atol=1e-12, rtol=0)  # prefill redid it
    assert mixer.padded_in_proj.is_current() and mixer.padded_in_proj.weight.shape[0] == 2320
    with torch.no_grad():
        u = torch.randn(3, 576, dtype=torch.float64)
        torch.testing.assert_close(mixer._project(u, fused=True)[1], mixer._project(u)[1], atol=1e-12, rtol=0)
    model.fuse_projections(1)  # 2313 is a multiple of 1: nothing left padded
    assert model.fused_multiple == 1 and mixer.padded_in_proj is None
    model.fuse_projections(8)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert all(block.mixer.padded_in_proj is None for block in clone.layers)
        with torch.no_grad():
            clone.layers[0].mixer.in_proj.weight.mul_(2.0)
        torch.testing.assert_close(_prefill_and_step_logits(clone.fuse_projections(8), "cpu"),
                                   _prefill_and_step_logits(clone.unfuse_projections(), "cpu"), atol=1e-12, rtol=0)
    trained = copy.deepcopy(teacher)
    with torch.inference_mode():
        trained.fuse_projections(8)
    assert not trained.layers[0].mixer.q_proj.weight.is_inference()
    trained(torch.randint(0, 97, (1, 5))).logits.sum().backward()
    assert trained.layers[0].mixer.q_proj.weight.grad is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kernel_set", ["triton", "mamba-ssm"])
def test_fused_projections_give_the_unfused_logits_on_gpu(kernel_set):
    """The prefill and decode step with ``in_proj`` padded to 8 columns (the CUDA default) against the
    unpadded one, bf16, with either set of decode kernels."""
    from thinkfast.kernels import select_kernels

    model = _odd_in_proj_llamba("cuda", torch.bfloat16)
    model.set_kernels(select_kernels({"ssm": kernel_set, "conv": kernel_set}, "cuda"))
    plain = _prefill_and_step_logits(model, "cuda")
    model.fuse_projections()
    mixer = model.layers[0].mixer
    u = torch.randn(4, 576, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        assert mixer._project(u, fused=True)[1].stride(0) == 2320
    padded = _prefill_and_step_logits(model, "cuda")
    err = ((padded - plain).norm() / plain.norm()).item()
    assert err < 1e-2, err


# --- compiled pointwise work in prefill (thinkfast.models.pointwise) ----------------------------------------

def test_compile_pointwise_switches_on_in_large_prefills_only(student, monkeypatch, pointwise_switch_log):
    """``compile_pointwise()`` switches the compiled path on for every layer of a large enough ``prefill``,
    never for a small one, ``step`` or ``forward``; on a CPU the eager code still runs, so the logits are
    the same to the bit."""
    from thinkfast.models import pointwise

    seen = pointwise_switch_log
    plain = _prefill_and_step_logits(student, "cpu")
    assert len(seen) == 2 * student.config.num_layers and not any(seen)
    student.compile_pointwise()
    try:
        seen.clear()
        _prefill_and_step_logits(student, "cpu")  # 12 tokens x 32 wide: far below the threshold
        assert len(seen) == 2 * student.config.num_layers and not any(seen)
        monkeypatch.setattr(pointwise, "MIN_PREFILL_ELEMENTS", 12 * 32)
        seen.clear()
        switched = _prefill_and_step_logits(student, "cpu")
        layers = student.config.num_layers
        assert seen == [True] * layers + [False] * layers  # prefill, then the step
        seen.clear()
        student(torch.arange(5)[None])
        assert seen == [False] * layers
    finally:
        student.compile_pointwise(False)
    assert torch.equal(switched, plain)


def _compile_raising(monkeypatch, message: str) -> list[int]:
    """Make ``pointwise.silu_mul`` take its compiled path (as on CUDA) through a "compiled" function that
    raises ``RuntimeError(message)``; returns a list that grows by one per compiled call."""
    from thinkfast.models import pointwise

    calls: list[int] = []

    def broken_compile(fn, dynamic=None):
        def compiled(*args):
            calls.append(1)
            raise RuntimeError(message)
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(pointwise.Pointwise, "_use_compiled", lambda self, x: self.error is None)
    monkeypatch.setattr(pointwise.silu_mul, "_compiled", None)
    monkeypatch.setattr(pointwise.silu_mul, "error", None)
    return calls


def test_a_pointwise_function_that_cannot_be_compiled_runs_eagerly(monkeypatch):
    """A compiler failure must not stop a prefill: the function returns the eager result, records why, and
    is not compiled or called compiled again."""
    import torch.nn.functional as F

    from thinkfast.models import pointwise

    calls = _compile_raising(monkeypatch, "backend='inductor' raised:\nInductorError: no working C compiler\nmore")
    gate, up = torch.randn(3, 5), torch.randn(3, 5)
    with pointwise.compiled():
        first, second = pointwise.silu_mul(gate, up), pointwise.silu_mul(gate, up)
    assert torch.equal(first, F.silu(gate) * up) and torch.equal(second, first)
    assert calls == [1]
    assert pointwise.compile_errors() == {
        "silu_mul": "RuntimeError: backend='inductor' raised: InductorError: no working C compiler"}


def test_a_pointwise_call_error_or_out_of_memory_is_raised_and_compiling_stays_on(monkeypatch):
    """An error the eager code raises too (bad shapes) and an out-of-memory error are the caller's: they
    propagate, and the function is not switched to eager."""
    from thinkfast.models import pointwise

    _compile_raising(monkeypatch, "shapes do not broadcast")
    with pointwise.compiled(), pytest.raises(RuntimeError, match="size of tensor"):
        pointwise.silu_mul(torch.randn(3, 5), torch.randn(3, 4))
    assert pointwise.silu_mul.error is None
    _compile_raising(monkeypatch, "CUDA out of memory. Tried to allocate 2.00 GiB")
    with pointwise.compiled(), pytest.raises(RuntimeError, match="out of memory"):
        pointwise.silu_mul(torch.randn(3, 5), torch.randn(3, 5))
    assert pointwise.compile_errors() == {}


def test_a_compiled_step_traces_the_pointwise_code_without_graph_breaks(student):
    """Inside ``torch.compile`` the pointwise functions inline their eager code: the whole decode step is
    one graph (dynamo cannot trace the switch's context variable, so checking it there would break it)."""
    student.compile_pointwise()
    try:
        cache = student.allocate_cache(2, 16)
        explanation = torch._dynamo.explain(student.step)(torch.tensor([3, 4]), torch.tensor([0, 0]), cache)
    finally:
        student.compile_pointwise(False)
        torch._dynamo.reset()
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", list(KINDS))
def test_compiled_pointwise_prefill_gives_the_eager_prefill_on_gpu(kind, dtype, monkeypatch):
    """On CUDA with the CUDA kernels: equal-length, left-padded and one-prompt prefills with the pointwise
    work compiled give the eager prefill's logits and cache states (float32: to 1e-4 relative; bf16: within
    bf16 noise, 3e-2), under no_grad and inference mode; the functions really ran compiled (the size
    threshold lowered to this tiny model's tensors; compiled calls counted), with no compiler failure and
    no recompile-limit fallback to eager."""
    from thinkfast.kernels import select_kernels
    from thinkfast.models import pointwise

    monkeypatch.setattr(pointwise, "MIN_PREFILL_ELEMENTS", 0)
    torch._dynamo.reset()
    for f in pointwise.REGISTRY.values():  # compile afresh for this model
        monkeypatch.setattr(f, "_compiled", None)
        monkeypatch.setattr(f, "error", None)
    torch.manual_seed(0)
    teacher = ThinkfastLM(tiny_config(vocab_size=512, hidden_size=256, intermediate_size=512, num_heads=4,
                                      num_kv_heads=2, head_dim=64), device="cuda", dtype=dtype)
    options = {} if kind == "transformer" else {"chunk_size": 64}
    if kind == "mambainllama":
        options["attention_layers"] = [1]
    model = build_student(teacher, kind, options).eval()
    model.set_kernels(select_kernels(None, "cuda")).fuse_projections()
    g = torch.Generator("cuda").manual_seed(3)
    ids = torch.randint(0, 512, (3, 150), device="cuda", generator=g)
    lengths = torch.tensor([150, 37, 90], device="cuda")
    slots, rows = torch.arange(6, device="cuda"), torch.tensor([0, 0, 1, 1, 2, 2], device="cuda")
    calls = [lambda c: model.prefill(ids, c, slots.view(3, 2)),
             lambda c: model.prefill(ids, c, slots, rows, lengths),
             lambda c: model.prefill(ids[0, :37], c, slots)]

    def run(compiled: bool, mode) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        model.compile_pointwise(compiled)
        out = []
        with mode():
            for call in calls:
                cache = model.allocate_cache(6, 160, state_dtype=torch.float32)
                out.append((call(cache).float(), [t for layer in cache.layers for t in vars(layer).values()
                                                  if isinstance(t, torch.Tensor)]))
        return out

    compiled_calls = {name: 0 for name in pointwise.REGISTRY}

    def counting(name, original):
        def call(*args):
            compiled_calls[name] += 1
            return original(*args)
        return call

    eager = run(False, torch.no_grad)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    worst = 0.0
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for mode in (torch.no_grad, torch.inference_mode):
            got_runs = run(True, mode)
            if mode is torch.no_grad:  # the compiled functions exist now: count their calls in the second run
                for name, f in pointwise.REGISTRY.items():
                    if f._compiled is not None:
                        monkeypatch.setattr(f, "_compiled", counting(name, f._compiled))
            for (got, got_state), (want, want_state) in zip(got_runs, eager, strict=True):
                for a, b in zip([got, *got_state], [want, *want_state], strict=True):
                    err = ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()
                    worst = max(worst, err)
                    assert err < tolerance, (mode.__name__, err)
    print(f"{kind} {dtype}: worst relative difference {worst:.2e}; compiled calls {compiled_calls}")
    used = ["rms_norm", "silu_mul", "apply_rotary" if kind != "llamba" else "gated_rms_norm"]
    assert all(compiled_calls[name] > 0 for name in used), compiled_calls
    assert pointwise.compile_errors() == {}


@pytest.fixture
def counted_pointwise_compiles(monkeypatch) -> list[str]:
    """The pointwise functions take their compiled path on this CPU (size threshold 0), compiled by dynamo
    with a backend that runs the traced graph as it is and records each graph's function name (every
    compilation and recompilation); compile state starts fresh."""
    from thinkfast.models import pointwise

    compiled: list[str] = []
    original = torch.compile

    def counting_compile(fn, dynamic=None, **kwargs):
        def backend(gm, example_inputs):
            compiled.append(fn.__name__)
            return gm.forward
        return original(fn, dynamic=dynamic, backend=backend)

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", counting_compile)
    monkeypatch.setattr(pointwise, "MIN_PREFILL_ELEMENTS", 0)
    def on_any_device(self, x):
        return self.error is None and pointwise._COMPILED.get() and not torch.is_grad_enabled()

    monkeypatch.setattr(pointwise.Pointwise, "_use_compiled", on_any_device)
    for f in pointwise.REGISTRY.values():
        monkeypatch.setattr(f, "_compiled", None)
        monkeypatch.setattr(f, "error", None)
    yield compiled
    torch._dynamo.reset()


def test_warmed_pointwise_kernels_serve_padded_and_other_sized_prefills(teacher, counted_pointwise_compiles):
    """After ``warm_pointwise`` (2 prompts of 9 tokens, not left-padded), prefills of other prompt counts and
    lengths, left-padded or not, compile nothing more (the token dims are dynamic, and the rotary tables have
    one shape with and without padding); their logits are the eager ones."""
    from thinkfast.models import pointwise

    model = build_student(teacher, "mambainllama", KINDS["mambainllama"]).compile_pointwise()
    cache = model.allocate_cache(4, 16)
    assert model.warm_pointwise(cache, 2, 9)
    warmed = sorted(counted_pointwise_compiles)
    assert {"rms_norm", "silu_mul", "gated_rms_norm", "apply_rotary"} <= set(warmed)
    ids = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        padded = model.prefill(ids, cache, torch.arange(3), torch.arange(3), torch.tensor([11, 4, 7]))
        plain = model.prefill(ids[:, :7], cache, torch.arange(3), torch.arange(3))
    assert sorted(counted_pointwise_compiles) == warmed
    assert pointwise.compile_errors() == {}
    model.compile_pointwise(False)
    with torch.no_grad():
        torch.testing.assert_close(padded, model.prefill(ids, cache, torch.arange(3), torch.arange(3),
                                                         torch.tensor([11, 4, 7])), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(plain, model.prefill(ids[:, :7], cache, torch.arange(3), torch.arange(3)),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused", [False, True])
def test_a_compiled_step_is_not_recompiled_by_a_compiled_prefill(teacher, counted_pointwise_compiles, fused):
    """The decode step compiled first (fixed shapes, as the engine compiles it; projections fused or not)
    keeps its one graph after a prefill that ran compiled pointwise kernels on the same parameters
    (marking a parameter's dims would fail the step's guards and recompile it, as the engine's warm-up
    prefill between compiling and capturing the step did)."""
    model = build_student(teacher, "mambainllama", KINDS["mambainllama"]).compile_pointwise()
    if fused:
        model.fuse_projections(8)
    cache = model.allocate_cache(2, 16)
    step_graphs: list[int] = []

    def step_backend(gm, example_inputs):
        step_graphs.append(1)
        return gm.forward

    step = torch._dynamo.optimize(step_backend, dynamic=False)(model.step)
    tokens, positions = torch.tensor([3, 4]), torch.tensor([5, 5])
    with torch.no_grad():
        step(tokens, positions, cache)
        assert model.warm_pointwise(cache, 2, 9) and counted_pointwise_compiles
        step(tokens, positions, cache)
    assert step_graphs == [1]
