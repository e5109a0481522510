"""Where one decode step spends its time: per-kernel breakdown and graph-replay timings.

    python bench/step_profile.py --shapes llamba-1b,llama-3.2-1b --batches 64,512 --out step.json

For each shape x batch (random weights, bf16, kernels chosen by "auto"): the step at context
length ``--ctx`` is timed as (a) ``model.step`` replayed from a CUDA graph, (b) the same plus
sampling at temperature 1 (the engine's sampler), and (c) one step under the torch profiler,
whose CUDA kernels are summed by name. The table shows the top kernels and their share of the step.

``--variants`` times (b) several ways: ``eager`` (the step as written), ``compile`` (through
:func:`thinkfast.generate.stepping.compile_step`, with the selected kernels) and ``compile-torch-ops``
(compiled, with the pure-PyTorch SSM/conv step operations, which inductor can fuse), ``compile-max``
(compiled with ``max-autotune-no-cudagraphs``, which also tunes the GEMMs); a mode ending in
``-unfused`` (``eager-unfused``, ``compile-unfused``) runs the model without
:meth:`~thinkfast.models.model.ThinkfastLM.fuse_projections` (separate ``q``/``k``/``v`` GEMMs, each SSM
``in_proj`` at its own width instead of padded to 8 columns), the baseline of that fusion, which the
engine applies; ``MODE:SET``
(e.g. ``compile:mamba-ssm``) pins the kernel plugin of the SSM and conv operations; ``compile@PRESET``
compiles under one of :data:`INDUCTOR_PRESETS` (inductor settings the engine does not use, measured
against the plain ``compile`` variant in the same process). Each variant's
logits are compared with those of the pure-PyTorch kernels (eager) from the same cache contents.
This is a diagnosis tool for ``docs/performance.md``; it changes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch._inductor.config
from cuda_timing import graph_replay_ms

from thinkfast.devices import DTYPES
from thinkfast.generate.sampling import SamplingParams, counter_uniform, sample_tokens
from thinkfast.generate.stepping import compile_and_warm
from thinkfast.kernels import Kernels, select_kernels
from thinkfast.profile.shapes import build_shape

INDUCTOR_PRESETS: dict[str, dict[str, object]] = {
    "combo": {"combo_kernels": True},  # horizontally fuse independent kernels into one launch
    "cdt": {"coordinate_descent_tuning": True},  # tune each generated kernel's launch settings
    "aggressive": {"aggressive_fusion": True},  # fuse nodes that share no memory access
    "combo-cdt": {"combo_kernels": True, "coordinate_descent_tuning": True},
}


def kernel_breakdown(fn, steps: int = 3, top: int = 400) -> list[dict]:
    """CUDA kernel time per step, summed by kernel name, largest first."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    rows = []
    for evt in prof.key_averages():
        device_us = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        if device_us > 0 and evt.key and not evt.key.startswith("ProfilerStep"):
            rows.append({"kernel": evt.key[:90], "calls_per_step": evt.count / steps,
                         "us_per_step": device_us / steps})
    rows.sort(key=lambda r: -r["us_per_step"])
    return rows[:top]


def random_step_inputs(model, batch: int, ctx: int, dtype: torch.dtype, state_dtype: torch.dtype,
                       device: torch.device):
    """``(cache, tokens, positions)`` for one decode step of ``batch`` rows at context ``ctx``: a cache of
    ``ctx + 64`` positions filled with N(0, 0.5) (so that compared logits are not trivially equal), random
    tokens ``(batch,)`` and every row at position ``ctx``."""
    cache = model.allocate_cache(batch, ctx + 64, dtype=dtype, state_dtype=state_dtype)
    for layer in cache.layers:
        for t in vars(layer).values():
            if isinstance(t, torch.Tensor):
                t.normal_(0, 0.5)
    tokens = torch.randint(0, model.config.vocab_size, (batch,), device=device)
    positions = torch.full((batch,), ctx, dtype=torch.long, device=device)
    return cache, tokens, positions


def sampled_step(model, tokens: torch.Tensor, positions: torch.Tensor, cache):
    """A function of no arguments: one ``model.step`` over ``cache`` plus the engine's sampler at temperature 1;
    returns the logits ``(batch, vocab)``."""
    batch = tokens.shape[0]
    keys = torch.arange(batch, device=tokens.device)
    zeros = torch.zeros(batch, dtype=torch.long, device=tokens.device)
    params = SamplingParams(temperature=1.0)

    @torch.no_grad()
    def step_and_sample():
        logits = model.step(tokens, positions, cache)
        sample_tokens(logits, counter_uniform(0, keys, zeros, positions), params)
        return logits

    return step_and_sample


def profile_one(shape: str, batch: int, ctx: int, dtype: torch.dtype, state_dtype: torch.dtype,
                variants: list[str]) -> dict:
    device = torch.device("cuda", torch.cuda.current_device())
    model = build_shape(shape, device, dtype).eval().fuse_projections()  # as the engine runs it
    selected = select_kernels(None, device)
    model.set_kernels(selected)
    cache, tokens, positions = random_step_inputs(model, batch, ctx, dtype, state_dtype, device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())

    @torch.no_grad()
    def step_only():
        model.step(tokens, positions, cache)

    step_and_sample = sampled_step(model, tokens, positions, cache)

    live = [t for layer in cache.layers for t in vars(layer).values() if isinstance(t, torch.Tensor)]
    saved = [t.clone() for t in live]

    def logits_from(fn) -> torch.Tensor:
        """Logits of one call of ``fn`` from the saved cache contents (restored afterwards)."""
        for t, s in zip(live, saved, strict=True):
            t.copy_(s)
        with torch.no_grad():
            out = fn().float()
        for t, s in zip(live, saved, strict=True):
            t.copy_(s)
        return out

    model.set_kernels(Kernels.reference())  # accuracy reference: the pure-PyTorch kernels, float32 accumulation
    reference = logits_from(step_and_sample)
    model.set_kernels(selected)
    result = {"shape": shape, "batch": batch, "ctx": ctx, "weight_bytes": weights,
              "step_ms": graph_replay_ms(step_only), "variants": {}}
    for variant in variants:
        mode, _, pinned = variant.partition(":")
        mode, _, preset = mode.partition("@")
        unfused = mode.endswith("-unfused")
        mode = mode.removesuffix("-unfused")
        kernels = selected
        if mode == "compile-torch-ops":
            kernels = Kernels(ssm=Kernels.reference().ssm, conv=Kernels.reference().conv,
                              attention=selected.attention)
        elif pinned:
            kernels = select_kernels({"ssm": pinned, "conv": pinned}, device)
        model.set_kernels(kernels)
        if unfused:
            model.unfuse_projections()
        else:
            model.fuse_projections()
        fn = step_and_sample
        entry: dict = {"fused_projections": not unfused}
        if mode.startswith("compile"):
            torch._dynamo.reset()  # each variant compiles afresh under its own settings
            with torch._inductor.config.patch(INDUCTOR_PRESETS[preset] if preset else {}):
                compiled = compile_and_warm(step_and_sample, device,
                                            "max-autotune-no-cudagraphs" if mode == "compile-max" else None)
            fn, entry["compile_s"], entry["compile_error"] = compiled.step, compiled.seconds, compiled.error
        logits = logits_from(fn)  # against the reference kernels, from the same cache contents
        entry["max_abs_logit_diff"] = float((logits - reference).abs().max())
        entry["rel_l2_logit_diff"] = float((logits - reference).norm() / reference.norm())
        entry["argmax_agree"] = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
        entry["step_sample_ms"] = graph_replay_ms(fn)
        entry["kernels"] = kernel_breakdown(fn)
        result["variants"][variant] = entry
    model.set_kernels(selected)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="llamba-1b,llama-3.2-1b")
    p.add_argument("--batches", default="64,512")
    p.add_argument("--ctx", type=int, default=768, help="context length (tokens) at which the step runs")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--state-dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--variants", default="eager",
                   help="comma-separated: eager, compile, compile-torch-ops, MODE:SET such as compile:mamba-ssm, "
                        f"or compile@PRESET with PRESET one of {', '.join(INDUCTOR_PRESETS)}")
    p.add_argument("--top", type=int, default=14, help="kernels listed per variant")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    results = []
    for shape in args.shapes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = profile_one(shape, batch, args.ctx, DTYPES[args.dtype], DTYPES[args.state_dtype], variants)
            torch.cuda.empty_cache()
            results.append(r)
            print(f"\n{shape} batch {batch} ctx {args.ctx}: eager step {r['step_ms']:.3f} ms, "
                  f"weights {r['weight_bytes'] / 1e9:.2f} GB", flush=True)
            for name, v in r["variants"].items():
                extra = "".join(f", {k} {v[k]:.3g}" for k in ("compile_s", "rel_l2_logit_diff", "argmax_agree")
                                if k in v)
                total = sum(k["us_per_step"] for k in v["kernels"])
                count = sum(k["calls_per_step"] for k in v["kernels"])
                print(f"  [{name}] step+sample {v['step_sample_ms']:.3f} ms{extra}; "
                      f"{count:.0f} kernel launches/step (top {len(v['kernels'])})", flush=True)
                for k in v["kernels"][:args.top]:
                    print(f"    {k['us_per_step']:8.1f} us {100 * k['us_per_step'] / total:5.1f}%  "
                          f"x{k['calls_per_step']:<5.0f} {k['kernel']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
