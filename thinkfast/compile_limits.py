"""Dynamo's recompile limits, raised once for every ``torch.compile`` the project makes."""

from __future__ import annotations

#: Recompilations dynamo may do per compiled function before it gives up: each engine or profile cell
#: compiles its own decode step, and each model its own prefill pointwise kernels (shapes differ).
RECOMPILE_LIMIT = 64


def raise_recompile_limits() -> None:
    """Let dynamo recompile a function up to :data:`RECOMPILE_LIMIT` times and, past that, raise instead of
    falling back to eager silently (the callers catch it and report it as a compile error)."""
    import torch._dynamo.config as dynamo_config

    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
    for name in ("accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 4 * RECOMPILE_LIMIT))
    if hasattr(dynamo_config, "fail_on_recompile_limit_hit"):
        dynamo_config.fail_on_recompile_limit_hit = True
