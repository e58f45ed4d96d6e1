"""Fusions of per-modality embeddings into one joint entity embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmea_lightning.models.normalize import l2_normalize


class WeightedConcatFusion(nn.Module):
    """``[(N, d_m)] * M -> (N, sum d_m)``: concatenation of the L2-normalised modality embeddings, each scaled by a
    learned global softmax weight (EVA's and MCLEA's fusion)."""

    def __init__(self, num_modalities: int):
        super().__init__()
        self.logits = nn.Parameter(torch.ones(num_modalities))

    def weights(self) -> torch.Tensor:
        """``(M,)`` softmax weights."""
        return F.softmax(self.logits, dim=0)

    def forward(self, embeddings: list[torch.Tensor], detach_inputs: bool = False) -> torch.Tensor:
        parts = []
        for w, e in zip(self.weights(), embeddings):
            e = l2_normalize(e, dim=1)
            parts.append(w * (e.detach() if detach_inputs else e))
        return torch.cat(parts, dim=1)


class TransformerModalityFusion(nn.Module):
    """MEAformer's fusion: a transformer over the modality tokens of each entity that predicts entity-level
    modality weights.

    ``tokens (B, M, d) -> (joint (B, M*d), hidden (B, M, d), weights (B, M))``: ``num_layers`` post-norm
    transformer layers (multi-head self-attention, residual + LayerNorm, optional feed-forward block, residual +
    LayerNorm). The last layer's attention probabilities, summed over heads and over queries and scaled by
    ``1/sqrt(M * heads)``, go through a softmax over modalities: the entity's modality weights. The joint
    embedding concatenates the L2-normalised *input* tokens scaled by these weights; ``hidden`` (the fused
    tokens) feeds MEAformer's after-fusion losses.
    """

    def __init__(self, dim: int = 300, heads: int = 1, num_layers: int = 1, feedforward_dim: int = 400,
                 use_feedforward: bool = True, dropout: float = 0.1, attn_dropout: float = 0.1):
        super().__init__()
        self.heads = heads
        self.attention = nn.ModuleList(
            nn.MultiheadAttention(dim, heads, dropout=attn_dropout, batch_first=True) for _ in range(num_layers)
        )
        self.attn_norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-12) for _ in range(num_layers))
        self.use_feedforward = use_feedforward
        if use_feedforward:
            self.feedforward = nn.ModuleList(
                nn.Sequential(nn.Linear(dim, feedforward_dim), nn.GELU(), nn.Linear(feedforward_dim, dim))
                for _ in range(num_layers)
            )
            self.ff_norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-12) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = tokens
        probs = None
        for i, attention in enumerate(self.attention):
            out, probs = attention(hidden, hidden, hidden, need_weights=True, average_attn_weights=False)
            hidden = self.attn_norm[i](hidden + self.dropout(out))
            if self.use_feedforward:
                hidden = self.ff_norm[i](hidden + self.dropout(self.feedforward[i](hidden)))
        num_modalities = tokens.shape[1]
        scores = probs.sum(dim=1).sum(dim=1) / (num_modalities * self.heads) ** 0.5  # (B, H, M, M) -> (B, M)
        weights = F.softmax(scores, dim=-1)
        joint = (weights.unsqueeze(-1) * F.normalize(tokens, dim=-1)).flatten(1)
        return joint, hidden, weights
