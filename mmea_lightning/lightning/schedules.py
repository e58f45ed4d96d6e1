"""Learning-rate schedules not in torch."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class CosineWithWarmup(LRScheduler):
    """Linear warm-up over ``warmup_ratio`` of the steps, then cosine decay to ``min_ratio`` (MEAformer's ``cos``).

    Stepped once per optimiser step. :meth:`set_horizon` re-sizes the decay when the run's total step count
    changes mid-run -- iterative training adds seed links, so later epochs take more steps than the first one,
    from which the total was estimated. Without it the decay would end early and the last epochs would train at
    ``min_ratio`` (zero by default). :meth:`restart` begins a new warm-up and decay at the current step, as the
    public MEAformer code does when its iterative stage starts.
    """

    def __init__(self, optimizer: Optimizer, num_training_steps: int, warmup_ratio: float = 0.15,
                 min_ratio: float = 0.0, last_epoch: int = -1):
        self.num_training_steps = num_training_steps  # the step at which the decay ends (counted from step 0)
        self.warmup_ratio = warmup_ratio
        self.warmup = max(int(num_training_steps * warmup_ratio), 1)
        self.min_ratio = min_ratio
        self.start = 0  # the step at which the current warm-up began (moved by restart)
        # The decay is linear in steps from (anchor_step, anchor_progress) to (num_training_steps, 1);
        # set_horizon moves the anchor to the current step so that the rate stays continuous.
        self.anchor_step, self.anchor_progress = self.warmup, 0.0
        super().__init__(optimizer, last_epoch)

    @property
    def warmup_end(self) -> int:
        return self.start + self.warmup

    def progress(self, step: int) -> float:
        """Share of the cosine decay done at ``step`` (0 until the warm-up ends, 1 from the last step on)."""
        if step < self.anchor_step:
            return self.anchor_progress
        span = max(self.num_training_steps - self.anchor_step, 1)
        return min(self.anchor_progress + (1.0 - self.anchor_progress) * (step - self.anchor_step) / span, 1.0)

    def factor(self, step: int) -> float:
        """The learning rate at ``step`` as a share of the base rate."""
        if step < self.warmup_end:
            return (step - self.start + 1) / self.warmup
        cosine = 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))
        return self.min_ratio + (1.0 - self.min_ratio) * cosine

    def set_horizon(self, num_training_steps: int) -> None:
        """End the decay at ``num_training_steps`` instead, continuing from the current step's rate. The warm-up
        keeps its length in steps."""
        step = max(self.last_epoch, self.warmup_end)
        self.anchor_progress = self.progress(step)
        self.anchor_step = step
        self.num_training_steps = num_training_steps

    def restart(self, num_training_steps: int, lr_scale: float = 1.0) -> None:
        """A new cycle from the current step: warm-up over ``warmup_ratio`` of the steps left, then a cosine decay
        that ends at step ``num_training_steps``; the base rates are multiplied by ``lr_scale`` first. The
        optimiser's rates are set at once, so the next step uses the new cycle's first rate."""
        self.start = max(self.last_epoch, 0)
        self.num_training_steps = num_training_steps
        self.warmup = max(int((num_training_steps - self.start) * self.warmup_ratio), 1)
        self.anchor_step, self.anchor_progress = self.warmup_end, 0.0
        self.base_lrs = [base * lr_scale for base in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
