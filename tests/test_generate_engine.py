"""The batched engine against the slow reference loop (full forward per token), token for token, and
batched prefill against per-prompt prefill.

Tiny random ThinkfastLMs in float64 (so cached and uncached logits agree far below any sampling
boundary) of the three kinds: transformer, pure SSM and hybrid.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch

from thinkfast.data.answers import answer_end, extract_answer
from thinkfast.errors import ThinkfastError
from thinkfast.generate.engine import Engine, EngineSettings, Request
from thinkfast.generate.reference import reference_sample
from thinkfast.generate.sampling import SamplingParams
from thinkfast.generate.scheduler import SlotScheduler, plan_prefills
from thinkfast.generate.stops import StopChecker
from thinkfast.models.cache import AttentionCache
from thinkfast.models.config import ModelConfig, SSMConfig
from thinkfast.models.model import ThinkfastLM

VOCAB = 48
EOS = 5
MIXERS = {
    "transformer": ["attention"] * 2,
    "pure": ["ssm"] * 2,
    "hybrid": ["ssm", "attention", "ssm"],
}


def _tiny_model(kind: str) -> ThinkfastLM:
    torch.manual_seed(0)
    ssm = SSMConfig(num_heads=4, head_dim=8, state_size=8, num_x_heads=2, num_b_groups=1, num_c_groups=1,
                    chunk_size=4, gate=True, norm=True)
    mixers = MIXERS[kind]
    config = ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=len(mixers),
                         num_heads=4, num_kv_heads=2, head_dim=8, mixers=mixers,
                         ssm=ssm if "ssm" in mixers else None)
    return ThinkfastLM(config, dtype=torch.float64).eval()


@pytest.fixture(scope="module", params=sorted(MIXERS))
def model(request) -> ThinkfastLM:
    return _tiny_model(request.param)


def _requests(lengths=(3, 9, 5, 1, 6), samples=3) -> list[Request]:
    gen = torch.Generator().manual_seed(1)
    return [Request(torch.randint(6, VOCAB, (n,), generator=gen), 1000 + 7 * i, tuple(range(samples)))
            for i, n in enumerate(lengths)]


def _run(model, requests, *, batch_size, max_new=16, sampling=SamplingParams(), seed=3, eos=(EOS,),
         stop_checker=None, check_every=4, **prefill):
    settings = EngineSettings(batch_size=batch_size, max_seqlen=max(len(r.prompt_ids) for r in requests) + max_new,
                              max_new_tokens=max_new, sampling=sampling, seed=seed, eos_ids=eos,
                              check_every=check_every, **prefill)
    engine = Engine(model, settings, stop_checker)
    return {(f.request, f.sample_index): f for f in engine.generate(requests)}


def _assert_matches_reference(model, requests, got, *, max_new=16, sampling=SamplingParams(), seed=3,
                              eos=(EOS,), stop_checker=None):
    expected = {(i, s) for i, r in enumerate(requests) for s in r.sample_indices}
    assert set(got) == expected
    for (i, s), item in got.items():
        ref = reference_sample(model, requests[i].prompt_ids, requests[i].key, s, sampling=sampling, seed=seed,
                               max_new_tokens=max_new, eos_ids=eos, stop_checker=stop_checker)
        assert (item.tokens, item.finish_reason, item.stop_text) == (ref.tokens, ref.finish_reason, ref.stop_text), \
            (i, s)


@pytest.mark.parametrize("overlap", [False, True])
def test_engine_matches_reference_with_eos_mid_batch_and_refill(model, overlap):
    requests = _requests()
    got = _run(model, requests, batch_size=4, overlap_prefill=overlap)  # 15 samples through 4 slots: many refills
    _assert_matches_reference(model, requests, got)
    reasons = {f.finish_reason for f in got.values()}
    assert reasons == {"eos", "length"}  # rows finished at different steps while others kept going
    assert all(f.seconds > 0 for f in got.values())


@pytest.mark.parametrize("sampling", [
    SamplingParams(temperature=0.7, top_k=10),
    SamplingParams(temperature=1.3, top_p=0.8, min_p=0.02),
])
def test_engine_matches_reference_with_filters(model, sampling):
    requests = _requests(lengths=(4, 2, 7), samples=2)
    got = _run(model, requests, batch_size=3, sampling=sampling, check_every=1)
    _assert_matches_reference(model, requests, got, sampling=sampling)


def test_samples_do_not_depend_on_batch_size_or_check_interval(model):
    requests = _requests(lengths=(4, 8), samples=3)
    a = _run(model, requests, batch_size=2, check_every=16)
    b = _run(model, requests, batch_size=6, check_every=3)
    assert {k: v.tokens for k, v in a.items()} == {k: v.tokens for k, v in b.items()}
    # split_requests: the second request starts in the 2 slots left and its last sample after another prefill
    split = _run(model, requests, batch_size=5, split_requests=True)
    assert {k: v.tokens for k, v in split.items()} == {k: v.tokens for k, v in a.items()}
    # sample indices, not slots, key the noise: resuming with only some indices gives the same samples
    part = _run(model, [Request(r.prompt_ids, r.key, (2,)) for r in requests], batch_size=2)
    assert all(part[(i, 2)].tokens == a[(i, 2)].tokens for i in range(len(requests)))


def test_unfused_engine_samples_what_the_fused_engine_samples(model):
    """The engine fuses the model's projections by default (one q/k/v GEMM; :mod:`thinkfast.models.fused`);
    ``fuse_projections=False`` runs it unfused. Same tokens either way."""
    requests = _requests(lengths=(4, 8), samples=3)
    fused = _run(model, requests, batch_size=4, sampling=SamplingParams(temperature=1.0))
    assert model.fused_multiple == 1  # on the CPU nothing is padded; the q/k/v GEMMs are one
    assert all(b.mixer.fused_qkv is not None for b in model.layers if b.kind == "attention")
    plain = _run(model, requests, batch_size=4, sampling=SamplingParams(temperature=1.0), fuse_projections=False)
    assert model.fused_multiple is None
    assert all(b.mixer.fused_qkv is None for b in model.layers if b.kind == "attention")
    assert {k: v.tokens for k, v in plain.items()} == {k: v.tokens for k, v in fused.items()}


def test_temperature_zero_is_greedy(model):
    requests = _requests(lengths=(5, 3), samples=2)
    got = _run(model, requests, batch_size=3, sampling=SamplingParams(temperature=0.0), eos=())
    for i, r in enumerate(requests):
        assert got[(i, 0)].tokens == got[(i, 1)].tokens  # no noise: every sample is the same
        ids = r.prompt_ids.unsqueeze(0)
        for tok in got[(i, 0)].tokens:  # each token is the argmax of a full forward
            assert tok == int(model(ids).logits[0, -1].argmax())
            ids = torch.cat([ids, torch.tensor([[tok]])], dim=1)


def _letters(tokens) -> str:
    return "".join("" if t == EOS else chr(ord("a") + t % 8) for t in tokens)


def test_stop_strings_cut_at_the_first_token_completing_them(model):
    checker = StopChecker(["cd", "hh"], _letters)
    requests = _requests()
    got = _run(model, requests, batch_size=5, stop_checker=checker, max_new=24, check_every=5)
    _assert_matches_reference(model, requests, got, stop_checker=checker, max_new=24)
    stopped = [f for f in got.values() if f.finish_reason == "stop"]
    assert stopped and any(len(f.tokens) < 24 for f in stopped)
    for f in stopped:
        full = _letters(f.tokens)
        assert full.startswith(f.stop_text)
        assert full.endswith(("cd", "hh")) and "cd" not in full[:-1] and "hh" not in full[:-1]
        assert f.stop_text == full[:-2]


def test_progress_reports_each_generated_token_once_and_no_slot_is_left_decoding(model):
    """``on_progress`` is called after every check with the tokens generated since the last one: without stop
    strings they add up to the samples' tokens, a refilled slot counted from its new sample's first token. A
    sample cut by a stop string frees its slot, which must stop decoding: once ``generate`` returns no slot is
    still running."""
    requests = _requests()
    settings = EngineSettings(batch_size=4, max_seqlen=9 + 24, max_new_tokens=24, sampling=SamplingParams(), seed=3,
                              eos_ids=(EOS,), check_every=4)
    engine = Engine(model, settings)
    progress: list[int] = []
    got = list(engine.generate(requests, on_progress=progress.append))
    assert len(progress) == engine.stats.cycles and all(n >= 0 for n in progress)
    assert sum(progress) == sum(len(f.tokens) for f in got)
    assert bool(engine.done.all())

    engine = Engine(model, settings, StopChecker(["cd", "hh"], _letters))
    progress.clear()
    got = list(engine.generate(requests, on_progress=progress.append))
    assert sum(f.finish_reason == "stop" for f in got) >= 2
    assert bool(engine.done.all()), "a slot whose sample a stop string ended kept decoding"
    # tokens past a stop string, up to the check that found it, were generated (and reported) too
    assert sum(progress) >= sum(len(f.tokens) for f in got)


# token -> text for the answer rule: answer lines ("####" then digits), headings ("####" then "Step"), newlines
_PIECES = ["####", " ", "4", "\n", "2", "", "Step", "#"]


def _pieces(tokens) -> str:
    return "".join(_PIECES[t % 8] for t in tokens if t != EOS)


@pytest.mark.parametrize("stops", [[], ["2 ", "##\n"]])
@pytest.mark.parametrize("overlap", [False, True])
def test_answer_rule_ends_samples_as_the_reference_loop_does(model, stops, overlap):
    checker = StopChecker(stops, _pieces, "gsm8k")
    requests = _requests()
    got = _run(model, requests, batch_size=5, stop_checker=checker, max_new=40, check_every=6,
               overlap_prefill=overlap)
    _assert_matches_reference(model, requests, got, stop_checker=checker, max_new=40)
    answered = [f for f in got.values() if f.finish_reason == "answer"]
    reasons = {f.finish_reason for f in got.values()}
    assert answered and reasons - {"answer"} and ("stop" in reasons or not stops)
    for f in answered:
        full = _pieces(f.tokens)
        # the last token completed the first answer line; the text is cut before its newline
        assert answer_end(full, "gsm8k") == len(f.stop_text) and full.startswith(f.stop_text)
        assert answer_end(_pieces(f.tokens[:-1]), "gsm8k") is None
        assert extract_answer(f.stop_text, "gsm8k") == extract_answer(full, "gsm8k")


def test_first_token_eos_and_single_token_budget(model):
    requests = _requests(lengths=(3, 4), samples=2)
    got = _run(model, requests, batch_size=2, max_new=1)
    assert all(len(f.tokens) == 1 and f.finish_reason in ("eos", "length") for f in got.values())
    _assert_matches_reference(model, requests, got, max_new=1)
    # the first token sampled from the prefill is an EOS (made one here: the noise does not depend on the EOS
    # ids): that sample ends at once, while the others decode on
    first = got[(0, 0)].tokens[0]
    ended = _run(model, requests, batch_size=2, max_new=6, eos=(first,))
    _assert_matches_reference(model, requests, ended, max_new=6, eos=(first,))
    assert (ended[(0, 0)].tokens, ended[(0, 0)].finish_reason) == ([first], "eos")
    assert any(len(f.tokens) > 1 for f in ended.values())


def test_plan_prefills_groups_by_length_within_token_and_padding_budgets():
    lengths = [6, 3, 6, 9, 6, 2, 3]
    assert plan_prefills(lengths, 10**6) == [[5], [1, 6], [0, 2, 4], [3]]  # exact lengths, shortest first
    assert plan_prefills(lengths, 12) == [[5], [1, 6], [0, 2], [4], [3]]  # at most 12 padded tokens
    assert plan_prefills(lengths, 1) == [[i] for i in (5, 1, 6, 0, 2, 4, 3)]  # one prompt per prefill
    assert plan_prefills(lengths, 10**6, 0.9) == [[5, 1, 6, 0, 2, 4, 3]]  # 28 of 63 tokens are padding
    # 2,3,3: 1 of 9 tokens is padding; adding a 6 would make it 10 of 24. 6,6,6,9: 9 of 36 (25%) is padding
    assert plan_prefills(lengths, 10**6, 0.25) == [[5, 1, 6], [0, 2, 4, 3]]
    assert plan_prefills(lengths, 10**6, 0.2) == [[5, 1, 6], [0, 2, 4], [3]]
    assert plan_prefills([], 8) == []


PREFILL_MODES = {"per-prompt": {"prefill_tokens": 1, "prefill_padding": 0.0},
                 "equal-lengths": {"prefill_padding": 0.0},
                 "left-padded": {"prefill_padding": 0.9},
                 "bucketed": {"prefill_padding": 0.0, "prefill_bucket": 4}}


def _started(model, requests, max_new=8, **prefill) -> Engine:
    """An engine right after the first round of prefills (every request fits the batch)."""
    batch = sum(len(r.sample_indices) for r in requests)
    settings = EngineSettings(batch_size=batch, max_seqlen=max(len(r.prompt_ids) for r in requests) + max_new,
                              max_new_tokens=max_new, sampling=SamplingParams(), seed=3, eos_ids=(EOS,), **prefill)
    engine = Engine(model, settings)
    engine._start(requests, SlotScheduler(batch, ((i, r.sample_indices) for i, r in enumerate(requests))).assign())
    return engine


def _slot_state(engine: Engine, slot: int) -> list[torch.Tensor]:
    """What the prefill wrote for ``slot``: KV rows of its prompt, conv and SSM state."""
    length = int(engine.positions[slot])
    out = []
    for layer in engine.cache.layers:
        if isinstance(layer, AttentionCache):
            out += [layer.k[slot, :length], layer.v[slot, :length]]
        else:
            out += [t[slot] for t in (layer.conv_state, layer.ssm_state) if t is not None]
    return out


def test_batched_prefill_equals_per_prompt_prefill(model):
    requests = _requests(lengths=(6, 3, 6, 9, 6, 2, 3), samples=2)
    alone = _started(model, requests, **PREFILL_MODES["per-prompt"])
    assert (alone.stats.prefills, alone.stats.prefill_batches) == (7, 7)
    # bucketed: lengths 6,3,6,9,6,2,3 pad to 8,4,8,12,8,4,4, three distinct widths
    for mode, batches in (("equal-lengths", 4), ("left-padded", 1), ("bucketed", 3)):
        batched = _started(model, requests, **PREFILL_MODES[mode])
        assert (batched.stats.prefills, batched.stats.prefill_batches) == (7, batches), mode
        for name in ("tokens", "positions", "keys", "sample_indices", "num_generated", "done", "hit_eos"):
            assert torch.equal(getattr(batched, name), getattr(alone, name)), (mode, name)
        assert torch.equal(batched.out[:, 0], alone.out[:, 0])
        for slot in range(batched.settings.batch_size):
            for got, want in zip(_slot_state(batched, slot), _slot_state(alone, slot), strict=True):
                torch.testing.assert_close(got, want, atol=1e-12, rtol=0, msg=f"{mode}, slot {slot}")


def test_samples_do_not_depend_on_prefill_batching(model):
    requests = _requests(lengths=(6, 3, 6, 9, 6, 2, 3), samples=2)
    runs = {mode: _run(model, requests, batch_size=5, max_new=10, **prefill)  # refills batch several prompts
            for mode, prefill in PREFILL_MODES.items()}
    tokens = {mode: {k: (f.tokens, f.finish_reason) for k, f in got.items()} for mode, got in runs.items()}
    for mode in PREFILL_MODES:
        assert tokens[mode] == tokens["per-prompt"], mode


def test_warm_up_prefills_change_no_sample(model):
    requests = _requests(lengths=(6, 3, 6, 9, 6, 2, 3), samples=2)
    want = _run(model, requests, batch_size=5, max_new=10, **PREFILL_MODES["per-prompt"])
    settings = EngineSettings(batch_size=5, max_seqlen=19, max_new_tokens=10, sampling=SamplingParams(), seed=3,
                              eos_ids=(EOS,), check_every=4, prefill_bucket=4)
    engine = Engine(model, settings)
    engine._warm_up_prefill({4, 8, 12, 16}, most=3)  # what generate() does on a GPU; it writes into idle slots
    assert engine._warm_widths == {4, 12, 16}  # three of four, spread over the range
    got = {(f.request, f.sample_index): f for f in engine.generate(requests)}
    assert {k: f.tokens for k, f in got.items()} == {k: f.tokens for k, f in want.items()}
    assert engine.timings["warmup_seconds"] == engine.warmup_seconds > 0


def test_bucketed_width_is_capped_at_the_cache_and_one_slot_engines_warm_up_and_rerun(model):
    requests = _requests(lengths=(9, 3), samples=1)
    want = _run(model, requests, batch_size=1, max_new=2, **PREFILL_MODES["per-prompt"])
    settings = EngineSettings(batch_size=1, max_seqlen=11, max_new_tokens=2, sampling=SamplingParams(), seed=3,
                              eos_ids=(EOS,), check_every=4, prefill_bucket=8)
    engine = Engine(model, settings)
    assert (engine._bucketed(9), engine._bucketed(3), engine._bucketed(8)) == (11, 8, 8)  # 16 capped at 11
    engine._warm_up_prefill({8, 11})
    for _ in range(2):  # a second generate() on the same engine samples the same
        got = {(f.request, f.sample_index): f.tokens for f in engine.generate(requests)}
        assert got == {k: f.tokens for k, f in want.items()}


def test_prefill_settings_are_checked(model):
    with pytest.raises(ThinkfastError, match="prefill_padding"):
        _started(model, _requests(lengths=(2,), samples=1), prefill_padding=1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_engine_equals_eager_engine_and_reference_on_gpu(model):
    from thinkfast.kernels import select_kernels

    gpu = ThinkfastLM(model.config, device="cuda", dtype=torch.float64)
    gpu.load_state_dict(model.state_dict())
    # the torch kernels in float64: this checks the engine's graph path, not the CUDA kernels' rounding
    gpu.set_kernels(select_kernels({"ssm": "torch", "conv": "torch", "attention": "torch"}, "cuda")).eval()
    requests = _requests()
    sampling = SamplingParams(temperature=1.0, top_p=0.95)
    runs = {}
    # bucket 4: warm-up prefills inside generate(); overlap: prefills queued behind the decode graphs,
    # their inputs copied from pinned memory without a stream sync
    for graphs, bucket, overlap in ((True, 1, False), (False, 1, False), (True, 4, False), (True, 4, True)):
        settings = EngineSettings(batch_size=4, max_seqlen=9 + 16, max_new_tokens=16, sampling=sampling, seed=3,
                                  eos_ids=(EOS,), check_every=4, cuda_graphs=graphs, prefill_bucket=bucket,
                                  overlap_prefill=overlap)
        engine = Engine(gpu, settings)
        assert engine.uses_cuda_graph == graphs, engine.graph_error
        runs[graphs, bucket, overlap] = {(f.request, f.sample_index): (f.tokens, f.finish_reason)
                                         for f in engine.generate(requests)}
        assert (engine.warmup_seconds > 0) == (bucket > 1)
    assert runs[True, 1, False] == runs[False, 1, False] == runs[True, 4, False] == runs[True, 4, True]
    cpu = _run(model, requests, batch_size=4, sampling=sampling)
    assert runs[True, 1, False] == {k: (v.tokens, v.finish_reason) for k, v in cpu.items()}



def _compiled_hybrid_run() -> tuple[Engine, dict]:
    """The hybrid model through an engine with ``compile=True``; returns the engine and its samples
    (already checked against the slow reference loop, EOS mid-batch and refill included)."""
    hybrid = _tiny_model("hybrid")
    requests = _requests()
    settings = EngineSettings(batch_size=4, max_seqlen=max(len(r.prompt_ids) for r in requests) + 16,
                              max_new_tokens=16, sampling=SamplingParams(), seed=3, eos_ids=(EOS,), check_every=4,
                              compile=True)
    engine = Engine(hybrid, settings)
    got = {(f.request, f.sample_index): f for f in engine.generate(requests)}
    _assert_matches_reference(hybrid, requests, got)
    return engine, got


def test_compiled_step_samples_what_the_reference_samples():
    """``compile=True`` runs the step through torch.compile (inductor's CPU backend here, ~20 s): the same
    tokens as the slow reference loop."""
    engine, _ = _compiled_hybrid_run()
    assert engine.compile_error is None and engine.compile_seconds > 0
    assert engine.model.compiled_pointwise  # its prefills too (on a CPU the eager code runs)


def test_the_pointwise_warm_up_prefills_the_largest_group_and_changes_no_sample(monkeypatch, pointwise_switch_log):
    """``_warm_up_pointwise`` (run when a compiling engine is built on a GPU) prefills, with the compiled
    pointwise switch on, as many prompts of the longest possible length as ``prefill_tokens`` and the slots
    allow (one prompt: then also two of half the length); the slots it writes are refilled before they
    decode, so the samples stay the reference's. Too small a prefill for the compiled kernels, and nothing
    runs."""
    from thinkfast.models import pointwise

    model = _tiny_model("hybrid").compile_pointwise()
    requests = _requests()
    settings = EngineSettings(batch_size=4, max_seqlen=max(len(r.prompt_ids) for r in requests) + 16,
                              max_new_tokens=16, sampling=SamplingParams(), seed=3, eos_ids=(EOS,), check_every=4,
                              prefill_tokens=20)
    engine = Engine(model, settings)  # on a CPU: no warm-up here, and compile is off
    model.compile_pointwise()
    assert engine._warm_up_pointwise() == 0.0  # 2 x 9 tokens x 32 wide is far below the threshold
    shapes: list[tuple[tuple[int, ...], bool]] = []
    prefill = model.prefill

    def recording(ids, cache, slots, *args, **kwargs):
        shapes.append((tuple(ids.shape), pointwise._COMPILED.get()))
        return prefill(ids, cache, slots, *args, **kwargs)

    monkeypatch.setattr(model, "prefill", recording)
    monkeypatch.setattr(pointwise, "MIN_PREFILL_ELEMENTS", 2 * 9 * 32)
    assert engine._warm_up_pointwise() > 0.0
    assert shapes == [((2, 9), False)]  # 20 // 9 prompts of 9 tokens; the switch is set inside prefill
    assert pointwise_switch_log and all(pointwise_switch_log)
    got = {(f.request, f.sample_index): f for f in engine.generate(requests)}
    _assert_matches_reference(model, requests, got)
    assert not model.compile_pointwise(False).warm_pointwise(engine.cache, 2, 9)  # switched off: nothing to warm
    single = Engine(model, dataclasses.replace(settings, prefill_tokens=8))  # the longest prompt alone is over it
    model.compile_pointwise()
    monkeypatch.setattr(pointwise, "MIN_PREFILL_ELEMENTS", 8 * 32)
    shapes.clear()
    assert single._warm_up_pointwise() > 0.0
    assert shapes == [((1, 9), False), ((2, 4), False)]


def test_warm_up_prefills_leave_no_autograd_history_in_the_cache():
    """The warm-up prefills (run on a GPU before the clock) run without gradients: no cache tensor may
    come out requiring grad or holding a graph (which would keep the warm-up's activations alive)."""
    model = _tiny_model("hybrid")
    settings = EngineSettings(batch_size=2, max_seqlen=32, max_new_tokens=4, sampling=SamplingParams(),
                              prefill_bucket=4)
    engine = Engine(model, settings)
    engine._warm_up_prefill({8, 12})
    tensors = [t for layer in engine.cache.layers for t in vars(layer).values() if isinstance(t, torch.Tensor)]
    assert engine._warm_widths == {8, 12} and tensors
    assert not any(t.requires_grad or t.grad_fn is not None for t in tensors)


def test_the_cache_takes_the_settings_dtypes():
    """``dtype`` is the KV cache's and conv state's dtype, ``state_dtype`` the SSM state's (``generate
    --state-dtype``); left out, the model's dtype and float32."""
    torch.manual_seed(0)
    model = ThinkfastLM(_tiny_model("hybrid").config, dtype=torch.float32).eval()
    base = dict(batch_size=2, max_seqlen=16, max_new_tokens=4, sampling=SamplingParams())
    for settings, kv, state in (({}, torch.float32, torch.float32),
                                ({"state_dtype": torch.bfloat16}, torch.float32, torch.bfloat16),
                                ({"dtype": torch.bfloat16, "state_dtype": torch.float16}, torch.bfloat16,
                                 torch.float16)):
        cache = Engine(model, EngineSettings(**base, **settings)).cache
        attention = [layer for layer in cache.layers if isinstance(layer, AttentionCache)]
        ssm = [layer for layer in cache.layers if not isinstance(layer, AttentionCache)]
        assert attention and ssm
        assert {layer.k.dtype for layer in attention} == {kv}
        assert {layer.ssm_state.dtype for layer in ssm} == {state}, settings


def test_an_uncompiled_engine_prefills_eagerly():
    """An engine with ``compile`` off switches the model's compiled pointwise prefill off."""
    model = _tiny_model("hybrid").compile_pointwise()
    settings = EngineSettings(batch_size=2, max_seqlen=32, max_new_tokens=4, sampling=SamplingParams())
    Engine(model, settings)
    assert model.compiled_pointwise is False


def test_a_step_that_cannot_be_compiled_runs_eagerly(monkeypatch):
    """A compiler failure (no C compiler, an unsupported GPU...) must not stop generation: the engine keeps
    the eager step, says why, and samples exactly what the reference samples."""
    import thinkfast.generate.stepping as stepping

    def broken_compile(step, mode=None):
        def compiled():
            raise RuntimeError("InductorError: no working C compiler\nmore details")
        return compiled

    monkeypatch.setattr(stepping, "compile_step", broken_compile)
    engine, _ = _compiled_hybrid_run()
    assert engine.compile_error == "RuntimeError: InductorError: no working C compiler"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_overlapped_refill_never_waits_for_the_device(model):
    """With ``overlap_prefill`` a refill's prefill (uploads, forward, first tokens, bookkeeping) is queued
    without one host sync, so it overlaps the decode steps queued before it (the engine's own code and the
    model with the pure-PyTorch kernels; a kernel plugin's own syncs are not covered)."""
    from thinkfast.kernels import select_kernels

    gpu = ThinkfastLM(model.config, device="cuda", dtype=torch.float64)
    gpu.load_state_dict(model.state_dict())
    gpu.set_kernels(select_kernels({"ssm": "torch", "conv": "torch", "attention": "torch"}, "cuda")).eval()
    requests = _requests(lengths=(6, 3, 6, 9), samples=2)
    settings = EngineSettings(batch_size=8, max_seqlen=9 + 8, max_new_tokens=8, sampling=SamplingParams(), seed=3,
                              eos_ids=(EOS,), check_every=4, prefill_bucket=4, overlap_prefill=True)
    engine = Engine(gpu, settings)
    list(engine.generate(requests))  # first-time work (allocations, pinned blocks) outside the check
    assignments = SlotScheduler(8, ((i, r.sample_indices) for i, r in enumerate(requests))).assign()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:  # "warn" mode reports every sync, not the first
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            engine.decode(4)
            engine._start(requests, assignments)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    syncs = [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "called a synchronizing" in str(w.message)]
    assert not syncs, f"host syncs at {syncs}"
