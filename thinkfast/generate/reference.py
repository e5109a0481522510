"""The slow reference sampler: one sample at a time, a full forward over the whole sequence per token.

It uses the same sampler, the same noise counters and the same stop rule as the engine, and no
cache at all, so for a fixed seed the engine must reproduce it token for token. Tests only.
"""

from __future__ import annotations

import torch

from thinkfast.generate.engine import Finished
from thinkfast.generate.sampling import SamplingParams, counter_uniform, sample_tokens
from thinkfast.generate.stops import StopChecker


@torch.no_grad()
def reference_sample(model: torch.nn.Module, prompt_ids: torch.Tensor, key: int, sample_index: int, *,
                     sampling: SamplingParams, seed: int, max_new_tokens: int, eos_ids: tuple[int, ...] = (),
                     stop_checker: StopChecker | None = None) -> Finished:
    """Generate one sample of ``prompt_ids (L,)`` with ``model.forward``; ``request`` is left as -1."""
    device = next(model.parameters()).device
    ids = prompt_ids.to(device, torch.long).unsqueeze(0)  # (1, L)
    counters = [torch.tensor([c], dtype=torch.long, device=device) for c in (key, sample_index)]
    tokens: list[int] = []
    for t in range(max_new_tokens):
        logits = model(ids).logits[:, -1]  # (1, V)
        u = counter_uniform(seed, *counters, torch.tensor([t], dtype=torch.long, device=device))
        nxt = sample_tokens(logits, u, sampling)  # (1,)
        tokens.append(int(nxt))
        if stop_checker:
            found = stop_checker.first_stop(tokens, len(tokens) - 1)
            if found is not None:
                return Finished(-1, sample_index, tokens[: found.t], found.reason, found.text)
        if tokens[-1] in eos_ids:
            return Finished(-1, sample_index, tokens, "eos")
        ids = torch.cat([ids, nxt.unsqueeze(0)], dim=1)
    return Finished(-1, sample_index, tokens, "length")
