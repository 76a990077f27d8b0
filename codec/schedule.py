"""Learning-rate schedules of the training loops: factors of a base learning rate by step.

A run is planned as phases (``train``, ``finetune`` after pruning, ``qat``), each one
call of :func:`nnc.codec.training.fit` with its own step count; every phase follows
the same warm-up then cosine shape over its own steps.
"""

from __future__ import annotations

import math


def lr_multiplier(progress: float, warmup_fraction: float, warmup_start: float) -> float:
    """Learning-rate factor at ``progress`` in [0, 1) of a phase: linear warm-up from
    ``warmup_start`` over the first ``warmup_fraction``, then cosine to 0 (HNeRV, NeRV,
    NIRVANA)."""
    if progress < warmup_fraction:
        return warmup_start + (1.0 - warmup_start) * progress / warmup_fraction
    remaining = (progress - warmup_fraction) / max(1e-12, 1.0 - warmup_fraction)
    return 0.5 * (math.cos(math.pi * remaining) + 1.0)


def warmup_cosine_lr(step: int, steps: int, lr: float, warmup_steps: int, floor: float = 1e-6) -> float:
    """Learning rate at ``step`` of ``steps``: linear warm-up from ``lr / warmup_steps``
    over ``warmup_steps``, then cosine from ``lr`` down to ``floor`` (CLC's training)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
