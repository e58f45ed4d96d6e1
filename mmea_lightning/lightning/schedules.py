"""Learning-rate schedules not in torch."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def cosine_with_warmup(optimizer: Optimizer, num_training_steps: int, warmup_ratio: float = 0.15,
                       min_ratio: float = 0.0) -> LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then cosine decay to ``min_ratio`` (MEAformer's ``cos``)."""
    warmup = max(int(num_training_steps * warmup_ratio), 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(num_training_steps - warmup, 1), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
