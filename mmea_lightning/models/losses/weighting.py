"""Homoscedastic-uncertainty weighting of several losses (Kendall et al., CVPR 2018; MCLEA's
``CustomMultiLossLayer``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["UncertaintyWeighting"]


class UncertaintyWeighting(nn.Module):
    """``loss = sum_i exp(-s_i) * loss_i + s_i`` with learnable ``s_i = log sigma_i^2`` (``log_vars``, init 0).

    The ``+ s_i`` term keeps the weights from collapsing to zero; ``loss_i`` must be given in a fixed order.
    """

    def __init__(self, num_losses: int):
        super().__init__()
        if isinstance(num_losses, bool) or int(num_losses) != num_losses or num_losses < 1:
            raise ValueError(f"num_losses must be a positive integer, got {num_losses!r}")
        self.num_losses = int(num_losses)
        self.log_vars = nn.Parameter(torch.zeros(self.num_losses))

    def forward(self, losses: Sequence[Tensor]) -> Tensor:
        """``losses``: ``num_losses`` scalar tensors -> scalar weighted sum."""
        if len(losses) != self.num_losses:
            raise ValueError(f"expected {self.num_losses} losses, got {len(losses)}")
        stacked = torch.stack([loss.reshape(()) for loss in losses]).to(self.log_vars.dtype)
        return (torch.exp(-self.log_vars) * stacked + self.log_vars).sum()
