"""Generation throughput: our engine vs mamba_ssm and transformers, student vs teacher, vs the HBM bound.

All cases use random weights in bfloat16, random prompt tokens, sampling at temperature 1 with no
EOS (every sequence generates exactly ``--new-tokens`` tokens), one process, one card. Run on a GPU:

    python bench/generate_bench.py --out bench-generate.json
    python bench/generate_bench.py --cases mamba --batches 64,512 --out mamba.json   # a subset

and on a CPU, to check the script itself, with tiny shapes:

    python bench/generate_bench.py --tiny --out /tmp/tiny.json

Cases (``--cases``, comma-separated):

- ``mamba``: Llamba-1B-shaped student in our engine vs mamba_ssm ``MambaLMHeadModel.generate(cg=True)``
  of the same shape (Mamba-2, d_model 2048, 16 layers, 32 heads of 64, d_state 64, 32 B/C groups,
  MLP 8192), at each of ``--batches``;
- ``hf``: Llama-3.2-1B-shaped teacher in our engine vs transformers ``generate`` with a static cache
  (which transformers compiles with torch.compile), at ``--hf-batch``;
- ``student-teacher``: our student vs our teacher at ``--st-batch`` (prompt + new tokens as above);
- ``long``: our student at ``--st-batch`` vs our teacher at the largest batch whose cache fits, both
  at ``--long-total`` tokens per sequence (prompt ``long_total - new_tokens``, then ``new_tokens``).
- ``workload``: each of ``--workload-shapes`` on a continuous-batching workload shaped like the paper
  miniature's GSM8K sampling (docs/results.md): ``--workload-problems`` prompts of random lengths in
  ``--workload-prompt`` tokens, ``--workload-n`` samples each, at most ``--workload-new-tokens`` new
  tokens, ``--workload-batch`` slots; a fraction ``--workload-eos`` of the vocabulary ends a sample
  (with random weights the sampling is close to uniform, so sample lengths spread as a real model's
  do, about 75% reaching the cap at the default). The caller decodes every sample's text with
  ``--tokenizer`` (if given) and serialises it, as ``thinkfast generate`` does. The row gives tokens/s
  and the engine's time split (prefill, decode, hand-out, cycles); there is no bandwidth bound.

Our engine compiles its decode step (``torch.compile``, as ``thinkfast generate`` does by default;
``--no-compile`` turns it off); compilation happens while the engine is built, outside the timing, and
its seconds are recorded. Each row reports end-to-end tokens/s (batch x new tokens / wall time,
prefill included), for our engine also decode-only tokens/s (the tokens its decode steps generated,
i.e. all but each sample's first, which the prefill's logits give, over the decode seconds; the
count is in ``extra["decoded_tokens"]``), and the fraction of the HBM bound:
bytes a decode step must move (weights once + SSM/conv state read and written + KV cache read up to
the current position and written once, averaged over the decode steps) over the bandwidth of a
large device-to-device copy measured in the same run, divided by the measured time per step (end to
end for every row, so the baselines are comparable; decode-only as well for ours). Each of our rows
also records, in ``extra``, the engine's time split and ``graph_step_ms``: its captured decode step
replayed alone after the run, which against the decode ms per step shows what the host loop adds.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from thinkfast.devices import DTYPES
from thinkfast.generate.engine import Engine, EngineSettings, Request
from thinkfast.generate.sampling import SamplingParams
from thinkfast.kernels import select_kernels
from thinkfast.models import pointwise
from thinkfast.models.cache import AttentionCache, SSMCache
from thinkfast.profile.shapes import build_shape
from thinkfast.profile.timing import measure_bandwidth, median_time


@dataclass
class Row:
    """One measured configuration."""

    case: str
    impl: str
    model: str
    batch: int
    prompt_len: int
    new_tokens: int
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    decode_tokens_per_s: float | None = None
    ms_per_step: float = 0.0
    bound_ms_per_step: float = 0.0
    frac_of_bound: float = 0.0
    decode_frac_of_bound: float | None = None
    params: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepBytes:
    """Bytes one decode step must move: ``weights`` once, per slot ``state`` (read + write) and
    ``kv_per_token`` (read for every cached token, written for the new one)."""

    weights: int
    state: int
    kv_per_token: int

    def average(self, batch: int, prompt_len: int, new_tokens: int) -> float:
        """Mean bytes per decode step over positions ``prompt_len .. prompt_len + new_tokens - 1``."""
        mean_len = prompt_len + (new_tokens - 1) / 2 + 1
        return self.weights + batch * (2 * self.state + self.kv_per_token * mean_len)


# ---------------------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def ours_step_bytes(model: torch.nn.Module, dtype: torch.dtype, state_dtype: torch.dtype) -> StepBytes:
    """Per-slot state and per-token KV bytes of a ThinkfastLM, read off a one-slot cache."""
    cache = model.allocate_cache(1, 2, dtype=dtype, state_dtype=state_dtype)
    state = kv = 0
    for layer in cache.layers:
        if isinstance(layer, AttentionCache):
            kv += 2 * layer.k[0, 0].numel() * layer.k.element_size()
        elif isinstance(layer, SSMCache):
            state += layer.ssm_state.nbytes + (layer.conv_state.nbytes if layer.conv_state is not None else 0)
    return StepBytes(param_bytes(model), state, kv)


def random_prompts(count: int, length: int, vocab: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """(count, length) int64 random token ids (avoiding the first 16 ids)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(16, vocab, (count, length), generator=gen).to(device)


def fill(row: Row, seconds: float, bytes_per_step: float, bandwidth: float) -> Row:
    """End-to-end figures of ``row`` from its wall time."""
    row.seconds = seconds
    row.tokens_per_s = row.batch * row.new_tokens / seconds
    row.ms_per_step = 1e3 * seconds / row.new_tokens
    row.bound_ms_per_step = 1e3 * bytes_per_step / bandwidth
    row.frac_of_bound = row.bound_ms_per_step / row.ms_per_step
    return row


def median_run(repeats: int, once: Callable[[], tuple[float, Any]]) -> tuple[float, Any, list[float]]:
    """Call ``once`` (which times one run and returns ``(seconds, what the run made)``) ``repeats`` times;
    return the median run's seconds and product (the lower middle one for an even count) and every
    run's seconds, in order. Each baseline and each of our rows takes the same number of runs."""
    runs = [once() for _ in range(max(1, repeats))]
    ranked = sorted(range(len(runs)), key=lambda i: runs[i][0])
    seconds, product = runs[ranked[(len(runs) - 1) // 2]]
    return seconds, product, [r[0] for r in runs]


@torch.no_grad()
def timed_generate(model: torch.nn.Module, kwargs: dict[str, Any], length: int,
                   device: torch.device) -> tuple[float, torch.Tensor]:
    """Seconds of one baseline ``model.generate(**kwargs)`` call, and its output (``length`` tokens a row)."""
    sync(device)
    start = time.perf_counter()
    out = model.generate(**kwargs)
    sync(device)
    seconds = time.perf_counter() - start
    assert out.shape[1] == length, out.shape
    return seconds, out


# ---------------------------------------------------------------------------------------- our engine


def run_ours(case: str, shape: str, batch: int, prompt_len: int, new_tokens: int, args: argparse.Namespace,
             device: torch.device, bandwidth: float, model: torch.nn.Module | None = None) -> Row:
    """Our engine: ``batch`` slots, ``batch / samples_per_prompt`` random prompts, no EOS."""
    dtype, state_dtype = DTYPES[args.dtype], DTYPES[args.state_dtype]
    if model is None:
        model = load_ours(shape, device, dtype)
    spp = max(1, min(args.samples_per_prompt, batch))
    prompts = random_prompts((batch + spp - 1) // spp, prompt_len, model.config.vocab_size, device)
    requests = [Request(p, key=i, sample_indices=tuple(range(min(spp, batch - i * spp))))
                for i, p in enumerate(prompts)]

    def settings(new: int) -> EngineSettings:
        return EngineSettings(batch_size=batch, max_seqlen=prompt_len + new_tokens, max_new_tokens=new,
                              sampling=SamplingParams(temperature=1.0), seed=0, eos_ids=(),
                              check_every=args.check_every, cuda_graphs=not args.no_cuda_graphs, dtype=dtype,
                              state_dtype=state_dtype, compile=not args.no_compile and device.type == "cuda",
                              compile_prefill=not args.no_compile_prefill,
                              fuse_projections=not args.no_fuse_projections)

    # Kernel autotuning, Triton compilation and first-call costs stay outside the timing: the warm-up
    # prefills the same prompt groups as the timed run (Triton specialises kernels on shapes, so a
    # one-prompt warm-up would leave the batched prefill's compilation inside the timed region).
    warm = Engine(model, settings(2))
    for _ in warm.generate(requests):
        pass
    del warm
    free_memory(device)

    def once() -> tuple[float, dict[str, Any]]:
        """One timed run; what the row needs from its engine is taken before the engine (and its caches) goes."""
        engine = Engine(model, settings(new_tokens))
        sync(device)
        start = time.perf_counter()
        count = tokens = 0
        for item in engine.generate(requests):
            count, tokens = count + 1, tokens + len(item.tokens)
        sync(device)
        seconds = time.perf_counter() - start
        assert count == batch, (count, batch)
        st = engine.stats
        # each sample's first token is sampled from its prefill's logits, not by a decode step
        found = {"decode_seconds": st.decode_seconds, "decode_steps": st.decode_steps,
                 "decoded_tokens": tokens - count,
                 "record": {**engine_record(engine, model, args), "graph_step_ms": replayed_step_ms(engine, device)}}
        del engine
        free_memory(device)
        return seconds, found

    seconds, found, all_seconds = median_run(args.repeats, once)
    step = ours_step_bytes(model, dtype, state_dtype)
    per_step = step.average(batch, prompt_len, new_tokens)
    row = fill(Row(case, "thinkfast", shape, batch, prompt_len, new_tokens, params=sum(
        p.numel() for p in model.parameters())), seconds, per_step, bandwidth)
    decode_seconds, decode_steps = found["decode_seconds"], found["decode_steps"]
    decode_ms = 1e3 * decode_seconds / max(decode_steps, 1)
    # tokens the decode steps generated (not the first token of each sample, which its prefill gives, nor the
    # steps that ran after every slot was done) over the decode seconds
    row.decode_tokens_per_s = found["decoded_tokens"] / decode_seconds if decode_seconds else None
    row.decode_frac_of_bound = row.bound_ms_per_step / decode_ms if decode_ms else None
    row.extra = {**found["record"], "decoded_tokens": found["decoded_tokens"], "samples_per_prompt": spp,
                 "repeat_seconds": all_seconds}
    return row


def run_workload(shape: str, args: argparse.Namespace, device: torch.device) -> Row:
    """Our engine on a continuous-batching workload shaped like the paper miniature's (see ``workload``)."""
    dtype, state_dtype = DTYPES[args.dtype], DTYPES[args.state_dtype]
    model = load_ours(shape, device, dtype)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    low, high = (int(v) for v in args.workload_prompt.split(","))
    lengths = torch.randint(low, high + 1, (args.workload_problems,), generator=gen).tolist()
    requests = [Request(torch.randint(16, vocab, (n,), generator=gen), key=i,
                        sample_indices=tuple(range(args.workload_n))) for i, n in enumerate(lengths)]
    eos = tuple(range(vocab - max(1, round(args.workload_eos * vocab)), vocab))
    settings = EngineSettings(
        batch_size=args.workload_batch, max_seqlen=high + args.workload_new_tokens,
        max_new_tokens=args.workload_new_tokens, sampling=SamplingParams(temperature=1.0), seed=0, eos_ids=eos,
        check_every=args.check_every, cuda_graphs=not args.no_cuda_graphs, dtype=dtype, state_dtype=state_dtype,
        compile=not args.no_compile and device.type == "cuda", prefill_bucket=args.prefill_bucket,
        split_requests=args.split_requests, overlap_prefill=args.overlap_prefill,
        compile_prefill=not args.no_compile_prefill, fuse_projections=not args.no_fuse_projections)
    engine = Engine(model, settings)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)

    def consume(engine: Engine, batch: list[Request]) -> tuple[int, int, int]:
        samples = tokens = eos_count = 0
        for item in engine.generate(batch):
            text = tokenizer.decode(item.tokens, skip_special_tokens=True) if tokenizer is not None else ""
            json.dumps({"problem": item.request, "sample": item.sample_index, "text": text,
                        "tokens": len(item.tokens), "finish": item.finish_reason, "seconds": item.seconds})
            samples, tokens = samples + 1, tokens + len(item.tokens)
            eos_count += item.finish_reason == "eos"
        return samples, tokens, eos_count

    consume(engine, requests[:2])  # Triton autotuning and first-call costs of prefill shapes stay outside the timing
    sync(device)
    start = time.perf_counter()
    samples, tokens, eos_count = consume(engine, requests)
    sync(device)
    seconds = time.perf_counter() - start
    row = Row("workload", "thinkfast", shape, args.workload_batch, sorted(lengths)[len(lengths) // 2],
              args.workload_new_tokens, seconds=seconds, tokens_per_s=tokens / seconds,
              params=sum(p.numel() for p in model.parameters()), note=f"{samples} samples, {tokens / samples:.0f} "
              f"tokens each, {100 * eos_count / samples:.0f}% eos")
    st = engine.stats
    # the first token of each sample comes from its prefill, not from a decode step
    row.decode_tokens_per_s = (tokens - samples) / st.decode_seconds if st.decode_seconds else None
    row.ms_per_step = 1e3 * seconds / max(st.decode_steps, 1)
    row.extra = {**engine_record(engine, model, args), "samples": samples, "tokens": tokens,
                 "check_every": args.check_every, "prefill_bucket": args.prefill_bucket,
                 "split_requests": args.split_requests, "overlap_prefill": args.overlap_prefill,
                 "eos_fraction": eos_count / samples, "tokenizer": args.tokenizer}
    del engine, model
    free_memory(device)
    return row


def replayed_step_ms(engine: Engine, device: torch.device, replays: int = 8) -> float | None:
    """Device milliseconds per step of the engine's captured decode step, replayed ``check_every`` times
    back to back after the run (every slot finished, the caches at their last length), median of
    ``replays``: against the run's decode ms per step, what the host loop and its checks add. ``None``
    without a CUDA graph."""
    if not engine.uses_cuda_graph:
        return None
    steps = engine.settings.check_every
    return 1e3 * median_time(lambda: engine.decode(steps), device, warmup=0, repeats=replays) / steps


def engine_record(engine: Engine, model: torch.nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    """What a row records about our engine: its time split (:class:`EngineStats`), whether the step was
    compiled and captured (and why not), whether the prefill's pointwise work ran compiled (and what failed
    to compile), the state dtype and the kernel plugins."""
    return {**engine.timings, "state_dtype": args.state_dtype, "cuda_graphs": engine.uses_cuda_graph,
            "graph_error": engine.graph_error, "compiled": engine.compiled,
            "compile_seconds": engine.compile_seconds, "compile_error": engine.compile_error,
            "kernels": kernel_names(model), "fused_projections": engine.settings.fuse_projections,
            "compiled_prefill_pointwise": bool(getattr(model, "compiled_pointwise", False)),
            "prefill_compile_errors": pointwise.compile_errors()}


def kernel_names(model: torch.nn.Module) -> dict[str, str]:
    kernels = getattr(model, "kernels", None)
    return {op: type(getattr(kernels, op)).__name__ for op in ("ssm", "conv", "attention") if kernels}


def load_ours(shape: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    model = build_shape(shape, device, dtype).eval()
    model.set_kernels(select_kernels(None, device))
    return model


# ---------------------------------------------------------------------------------------- baselines


def mamba_config_for(model: torch.nn.Module):
    """A mamba_ssm ``MambaConfig`` (Mamba-2 mixers) of the same shape as our pure student."""
    from mamba_ssm.models.config_mamba import MambaConfig

    c = model.config
    s = c.ssm
    d_inner = s.num_heads * s.head_dim
    if d_inner % c.hidden_size:
        raise ValueError(f"mamba_ssm needs an integer expand; d_inner {d_inner} / d_model {c.hidden_size}")
    return MambaConfig(
        d_model=c.hidden_size, d_intermediate=c.intermediate_size, n_layer=c.num_layers, vocab_size=c.vocab_size,
        ssm_cfg={"layer": "Mamba2", "d_state": s.state_size, "headdim": s.head_dim, "ngroups": s.num_b_groups,
                 "expand": d_inner // c.hidden_size, "d_conv": max(s.conv_kernel, 2),
                 "chunk_size": s.chunk_size},
        rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=16,
        tie_embeddings=c.tie_embeddings)


def run_mamba(shape: str, ours_model: torch.nn.Module, batch: int, prompt_len: int, new_tokens: int,
              device: torch.device, bandwidth: float, repeats: int = 1) -> Row:
    """mamba_ssm ``MambaLMHeadModel.generate(cg=True)``, temperature 1, plain sampling (top_k=0, top_p=0)."""
    row = Row("mamba", "mamba_ssm", shape, batch, prompt_len, new_tokens)
    try:
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    except ImportError as exc:
        row.note = f"skipped: mamba_ssm not importable ({exc})"
        return row
    config = mamba_config_for(ours_model)
    model = MambaLMHeadModel(config, device=device, dtype=torch.bfloat16).eval()
    prompts = random_prompts(batch, prompt_len, config.vocab_size, device)
    max_length = prompt_len + new_tokens

    kwargs = {"input_ids": prompts, "max_length": max_length, "cg": True, "temperature": 1.0, "top_k": 0,
              "top_p": 0.0, "return_dict_in_generate": False}
    model.generate(**kwargs)  # captures its graphs and warms up
    seconds, out, all_seconds = median_run(repeats, partial(timed_generate, model, kwargs, max_length, device))
    cache = model.allocate_inference_cache(1, max_length, dtype=torch.bfloat16)
    state = sum(t.nbytes for conv, ssm in cache.values() for t in (conv, ssm))
    step = StepBytes(param_bytes(model), state, 0)
    row.params = sum(p.numel() for p in model.parameters())
    row.extra = {"mamba_config": asdict(config) if hasattr(config, "__dataclass_fields__") else str(config),
                 "repeat_seconds": all_seconds}
    del model, cache, out
    free_memory(device)
    return fill(row, seconds, step.average(batch, prompt_len, new_tokens), bandwidth)


def run_hf(ours_model: torch.nn.Module, shape: str, batch: int, prompt_len: int, new_tokens: int,
           device: torch.device, bandwidth: float, compile_: bool, repeats: int = 1) -> Row:
    """transformers ``generate`` of the same Llama shape: static cache (auto-compiled), sampling at temperature 1."""
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    c = ours_model.config
    config = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                         num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                         num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim, rms_norm_eps=c.rms_norm_eps,
                         max_position_embeddings=c.max_position_embeddings, tie_word_embeddings=c.tie_embeddings,
                         rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta}
                         if c.rope_scaling is None else {**c.rope_scaling, "rope_theta": c.rope_theta},
                         eos_token_id=None, bos_token_id=None, pad_token_id=0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    prompts = random_prompts(batch, prompt_len, c.vocab_size, device)
    mask = torch.ones_like(prompts)

    kwargs = {"input_ids": prompts, "attention_mask": mask, "max_new_tokens": new_tokens,
              "min_new_tokens": new_tokens, "do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
              "cache_implementation": "static", "disable_compile": not compile_}
    with torch.no_grad():
        model.generate(**kwargs)  # compiles
    seconds, out, all_seconds = median_run(repeats, partial(timed_generate, model, kwargs, prompt_len + new_tokens,
                                                            device))
    kv = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 2
    row = Row("hf", "transformers", shape, batch, prompt_len, new_tokens,
              params=sum(p.numel() for p in model.parameters()),
              note=f"static cache, {'compiled' if compile_ else 'eager'}, transformers {transformers.__version__}",
              extra={"repeat_seconds": all_seconds})
    del model, out
    free_memory(device)
    return fill(row, seconds, StepBytes(param_bytes(ours_model), 0, kv).average(batch, prompt_len, new_tokens),
                bandwidth)


def largest_teacher_batch(model: torch.nn.Module, total_len: int, device: torch.device, dtype: torch.dtype,
                          cap: int) -> int:
    """The largest batch (a multiple of 8, at most ``cap``) whose KV cache and sampling buffers fit in free memory."""
    if device.type != "cuda":
        return min(cap, 8)
    free_memory(device)
    free, _ = torch.cuda.mem_get_info(device)
    step = ours_step_bytes(model, dtype, torch.float32)
    per_slot = step.kv_per_token * total_len + 2 * step.state + 6 * 4 * model.config.vocab_size  # + logits work
    fits = int(0.85 * free // per_slot)
    return max(8, min(cap, fits // 8 * 8))


# ---------------------------------------------------------------------------------------- main


def table(rows: list[Row]) -> str:
    head = f"{'case':<16}{'impl':<13}{'model':<14}{'batch':>6}{'len':>7}{'tok/s':>11}{'dec tok/s':>11}" \
           f"{'ms/step':>9}{'bound':>8}{'%bound':>8}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        dec = f"{r.decode_tokens_per_s:,.0f}" if r.decode_tokens_per_s else "-"
        pct = f"{100 * r.frac_of_bound:.0f}%" if r.seconds and r.frac_of_bound else "-"
        if r.decode_frac_of_bound:
            pct += f"/{100 * r.decode_frac_of_bound:.0f}%"
        lines.append(f"{r.case:<16}{r.impl:<13}{r.model:<14}{r.batch:>6}{r.prompt_len + r.new_tokens:>7}"
                     f"{r.tokens_per_s:>11,.0f}{dec:>11}{r.ms_per_step:>9.2f}{r.bound_ms_per_step:>8.2f}{pct:>8}"
                     f"  {r.note}")
    return "\n".join(lines)


def ratios(rows: list[Row], student_shape: str, teacher_shape: str) -> dict[str, float]:
    """End-to-end tokens/s ratios: ours over each baseline (same case and batch), student over teacher."""
    done = [r for r in rows if r.seconds]
    out: dict[str, float] = {}
    for base in (r for r in done if r.impl != "thinkfast"):
        for ours in (r for r in done if r.impl == "thinkfast" and r.case == base.case and r.batch == base.batch):
            out[f"{base.case}: thinkfast / {base.impl} @ batch {base.batch}"] = ours.tokens_per_s / base.tokens_per_s
    for case in ("student-teacher", "long"):
        student = [r for r in done if r.case == case and r.model == student_shape]
        teacher = [r for r in done if r.case == case and r.model == teacher_shape]
        if student and teacher:
            out[f"{case}: student @ batch {student[0].batch} / teacher @ batch {teacher[0].batch}"] = \
                student[0].tokens_per_s / teacher[0].tokens_per_s
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="mamba,hf,student-teacher,long",
                   help="Comma-separated subset of: mamba, hf, student-teacher, long, workload.")
    p.add_argument("--batches", default="64,512", help="Batches of the `mamba` case.")
    p.add_argument("--hf-batch", type=int, default=64, help="Batch of the `hf` case.")
    p.add_argument("--st-batch", type=int, default=512, help="Batch of our student (and teacher) in "
                                                             "`student-teacher` and of the student in `long`.")
    p.add_argument("--prompt-len", type=int, default=512, help="Prompt tokens.")
    p.add_argument("--new-tokens", type=int, default=512, help="Generated tokens per sequence.")
    p.add_argument("--long-total", type=int, default=8192, help="Tokens per sequence in the `long` case.")
    p.add_argument("--workload-shapes", default="smollm2-135m,llamba-135m,hybrid-135m",
                   help="Models of the `workload` case.")
    p.add_argument("--workload-problems", type=int, default=100, help="`workload`: prompts.")
    p.add_argument("--workload-n", type=int, default=64, help="`workload`: samples per prompt.")
    p.add_argument("--workload-prompt", default="60,280", help="`workload`: prompt lengths, min,max tokens.")
    p.add_argument("--workload-new-tokens", type=int, default=256, help="`workload`: new tokens at most.")
    p.add_argument("--workload-batch", type=int, default=1024, help="`workload`: decode slots.")
    p.add_argument("--workload-eos", type=float, default=0.0011,
                   help="`workload`: fraction of the vocabulary that ends a sample.")
    p.add_argument("--prefill-bucket", type=int, default=64, help="`workload`: left-pad prompts to a multiple of "
                                                                   "this many tokens (1: no buckets).")
    p.add_argument("--overlap-prefill", action="store_true",
                   help="`workload`: launch each cycle's decode steps before the refills' prefills.")
    p.add_argument("--split-requests", action="store_true",
                   help="`workload`: start a prompt's samples before all of them fit the free slots.")
    p.add_argument("--tokenizer", default=None,
                   help="`workload`: tokenizer (directory or hub id) whose decode the caller runs per sample.")
    p.add_argument("--repeats", type=int, default=1,
                   help="Timed runs per row (ours and the baselines alike); a row reports the median run. "
                        "The workload case times its one row once.")
    p.add_argument("--samples-per-prompt", type=int, default=1,
                   help="Our engine: samples sharing one prompt (one prefill). 1 matches the baselines' work.")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--state-dtype", default="bfloat16", choices=sorted(DTYPES),
                   help="SSM state dtype of our engine (mamba_ssm keeps it in the model dtype).")
    p.add_argument("--check-every", type=int, default=16, help="Decode steps between host checks.")
    p.add_argument("--no-cuda-graphs", action="store_true", help="Our engine without CUDA graphs.")
    p.add_argument("--no-compile", action="store_true", help="Our engine without torch.compile of the decode step.")
    p.add_argument("--no-compile-prefill", action="store_true",
                   help="Our engine with the prefill's norms, gates and rotary embeddings run eagerly (the baseline "
                        "of the compiled pointwise prefill).")
    p.add_argument("--no-fuse-projections", action="store_true",
                   help="Our engine with separate q/k/v GEMMs and unpadded SSM in_proj (the fusion's baseline).")
    p.add_argument("--no-hf-compile", action="store_true", help="transformers without torch.compile.")
    p.add_argument("--tiny", action="store_true",
                   help="Tiny shapes, short sequences, small batches: checks the script on a CPU.")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    p.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = p.parse_args(argv)
    if args.tiny:
        args.prompt_len, args.new_tokens, args.long_total = 16, 16, 64
        args.batches, args.hf_batch, args.st_batch = "4,8", 4, 8
        args.workload_shapes, args.workload_problems, args.workload_n = "tiny-llama,tiny-hybrid", 4, 4
        args.workload_prompt, args.workload_new_tokens, args.workload_batch = "3,12", 16, 8
        args.workload_eos = 0.02
        args.dtype, args.state_dtype = "float32", "float32"
        args.no_hf_compile = True
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - {"mamba", "hf", "student-teacher", "long", "workload"}
    if unknown:
        sys.exit(f"--cases: unknown {sorted(unknown)}; choose from mamba, hf, student-teacher, long, workload")
    student_shape, teacher_shape = ("tiny-llamba", "tiny-llama") if args.tiny else ("llamba-1b", "llama-3.2-1b")
    dtype = DTYPES[args.dtype]
    # bytes/s of a device-to-device copy, read + write counted: the median of 20 copies
    bandwidth = measure_bandwidth(device, (1 << 22) if args.tiny else (2 << 30), repeats=20)
    free_memory(device)  # the copy's buffers go back to the device before the models load
    P, N = args.prompt_len, args.new_tokens
    rows: list[Row] = []

    def record(make: Callable[[], Row]) -> None:
        rows.append(make())
        print(table(rows[-1:]).splitlines()[-1], flush=True)

    if {"mamba", "student-teacher", "long"} & set(cases):
        student = load_ours(student_shape, device, dtype)
        if "mamba" in cases:
            for batch in (int(b) for b in args.batches.split(",")):
                record(lambda b=batch: run_ours("mamba", student_shape, b, P, N, args, device, bandwidth, student))
                record(lambda b=batch: run_mamba(student_shape, student, b, P, N, device, bandwidth, args.repeats))
        if "student-teacher" in cases:
            record(lambda: run_ours("student-teacher", student_shape, args.st_batch, P, N, args, device, bandwidth,
                                    student))
        if "long" in cases:
            record(lambda: run_ours("long", student_shape, args.st_batch, args.long_total - N, N, args, device,
                                    bandwidth, student))
        del student
        free_memory(device)
    if {"hf", "student-teacher", "long"} & set(cases):
        teacher = load_ours(teacher_shape, device, dtype)
        if "hf" in cases:
            record(lambda: run_ours("hf", teacher_shape, args.hf_batch, P, N, args, device, bandwidth, teacher))
            record(lambda: run_hf(teacher, teacher_shape, args.hf_batch, P, N, device, bandwidth,
                                  not args.no_hf_compile, args.repeats))
        if "student-teacher" in cases:
            record(lambda: run_ours("student-teacher", teacher_shape, args.st_batch, P, N, args, device, bandwidth,
                                    teacher))
        if "long" in cases:
            tb = largest_teacher_batch(teacher, args.long_total, device, dtype, args.st_batch)
            record(lambda: run_ours("long", teacher_shape, tb, args.long_total - N, N, args, device, bandwidth,
                                    teacher))
        del teacher
        free_memory(device)

    if "workload" in cases:
        for shape in (v.strip() for v in args.workload_shapes.split(",") if v.strip()):
            record(lambda shape=shape: run_workload(shape, args, device))

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"
    result = {
        "card": card, "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv]),
        "torch": torch.__version__, "bandwidth_GBps": bandwidth / 1e9, "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": [asdict(r) for r in rows], "ratios": ratios(rows, student_shape, teacher_shape),
    }
    print(f"\n{card}, {result['date']}, copy bandwidth {bandwidth / 1e9:,.0f} GB/s, {args.dtype}, "
          f"temperature 1\n{table(rows)}")
    for name, value in result["ratios"].items():
        print(f"{name}: {value:.2f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
