"""EVA's NCA loss: a bidirectional in-batch multi-similarity (neighbourhood component analysis) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NCALoss(nn.Module):
    """For a batch of seed links with L2-normalised embeddings ``l_i``, ``r_i`` and ``S = l r^T`` ``(B, B)``:

    ``loss = 1/B sum_i [ log(1 + sum_{j != i} exp(alpha S_ji)) / alpha + log(1 + sum_{j != i} exp(alpha S_ij)) / alpha
    - beta log(1 + relu(S_ii)) ]``

    exactly as the public EVA code computes it (``ep = 0``): in-batch negatives in both directions, a log-barrier on
    the positive similarity.
    """

    def __init__(self, alpha: float = 15.0, beta: float = 10.0):
        super().__init__()
        self.alpha = alpha
        self.beta = beta

    def forward(self, emb: torch.Tensor, links: torch.Tensor) -> torch.Tensor:
        """``emb (N, d)`` all entities (or any table indexed by ``links``), ``links (B, 2)`` -> scalar."""
        left = F.normalize(emb[links[:, 0]], dim=1)
        right = F.normalize(emb[links[:, 1]], dim=1)
        scores = left @ right.t()
        positive = scores.diagonal()
        exp_scores = torch.exp(self.alpha * scores)
        exp_positive = exp_scores.diagonal()  # removed from the sums instead of masking a (B, B) matrix
        loss = (
            torch.log1p(exp_scores.sum(0) - exp_positive) / self.alpha
            + torch.log1p(exp_scores.sum(1) - exp_positive) / self.alpha
            - self.beta * torch.log1p(F.relu(positive))
        )
        return loss.mean()
