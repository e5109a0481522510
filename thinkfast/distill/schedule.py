"""Learning-rate schedules: a multiplier of the peak learning rate as a function of the step.

All schedules start with ``warmup_steps`` of linear warm-up from ``lr / warmup_steps`` to ``lr``.
After warm-up:

- ``constant``: stays at ``lr``;
- ``cosine``: half-cosine from ``lr`` down to ``min_lr_ratio * lr``;
- ``wsd`` (warmup-stable-decay): stays at ``lr``, then for the last ``decay_fraction`` of all
  steps decays linearly to ``min_lr_ratio * lr``.

Step indices count optimizer steps from 0; the factor for step ``s`` is the one used *for* that
step's update. The decays reach ``min_lr_ratio * lr`` at step ``total_steps``, just after the last
update, so that with the default ``min_lr_ratio = 0`` the last update still moves the weights.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "wsd", "constant")


def lr_factor(step: int, total_steps: int, *, schedule: str = "cosine", warmup_steps: int = 0,
              decay_fraction: float = 0.2, min_lr_ratio: float = 0.0) -> float:
    """Multiplier in ``[min_lr_ratio, 1]`` (or below, during warm-up) for optimizer step ``step``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay_steps = max(int(round(decay_fraction * total_steps)), 0)
    decay_start = total_steps - decay_steps
    if decay_steps == 0 or step < decay_start:
        return 1.0
    progress = min((step - decay_start + 1) / (decay_steps + 1), 1.0)
    return 1.0 - (1.0 - min_lr_ratio) * progress


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor` (keyword arguments as there) to every parameter group."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, **kwargs))
