"""MPSEA's cross-modal weights (Eq. 8-9 of the MPSEA paper) and the weighted concatenation of modality tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mmea_lightning.models.normalize import l2_normalize

__all__ = ["cross_modal_weights", "weighted_concat"]


def cross_modal_weights(beta_m1: Tensor | None, beta_g: Tensor | None, present: Tensor | None = None) -> Tensor:
    """Entity-level modality weights ``(B, M)``, graph first (when given), then the ``m1`` modalities in order.

    Eq. 8-9: a softmax over the modalities of the per-head attention scores summed over heads, scaled by
    ``1 / sqrt(|M1| * N_s)`` for the ``m1`` modalities and by ``1 / sqrt(N_s)`` for the graph::

        s_m1 = sum_i beta_m1^(i) / sqrt(|M1| N_s),    s_g = sum_i beta_g^(i) / sqrt(N_s),    w = softmax([s_g, s_m1])

    Args:
        beta_m1: ``(B, N_s, M1)`` attention each ``m1`` modality receives per head (MMPF), or ``None``.
        beta_g: ``(B, N_s)`` the graph transformer's attention on the graph token per head, or ``None``.
        present: ``(B, M)`` bool in the output order; a missing modality gets weight 0 (the softmax runs over the
            present ones; an entity with none present keeps uniform weights rather than NaN).
    """
    scores = []
    if beta_g is not None:
        scores.append(beta_g.sum(dim=1, keepdim=True) / math.sqrt(beta_g.shape[1]))
    if beta_m1 is not None:
        heads, num_m1 = beta_m1.shape[1], beta_m1.shape[2]
        scores.append(beta_m1.sum(dim=1) / math.sqrt(num_m1 * heads))
    if not scores:
        raise ValueError("cross_modal_weights needs beta_m1 or beta_g")
    scores = torch.cat(scores, dim=1)
    if present is not None:
        if present.shape != scores.shape:
            raise ValueError(f"present must be {tuple(scores.shape)}, got {tuple(present.shape)}")
        present = present | ~present.any(dim=1, keepdim=True)
        scores = scores.masked_fill(~present, float("-inf"))
    return F.softmax(scores, dim=1)


def weighted_concat(tokens: Tensor, weights: Tensor) -> Tensor:
    """``tokens (B, M, d)``, ``weights (B, M)`` -> ``(B, M d)``: the L2-normalised tokens scaled by their weights and
    concatenated (the early / late joint embeddings ``x^mu`` / ``x~^mu``)."""
    return (weights.unsqueeze(-1) * l2_normalize(tokens, dim=-1)).flatten(1)
