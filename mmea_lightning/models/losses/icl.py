"""Intra-modal contrastive loss (ICL) shared by MCLEA, MEAformer and MPSEA (MCLEA's ``icl_loss``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ICLLoss", "link_chunks", "mask_diagonal"]


def _check_chunk_size(chunk_size: int | None) -> int | None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return None if chunk_size is None else int(chunk_size)


def link_chunks(links: Tensor, chunk_size: int | None) -> tuple[Tensor, ...]:
    """Validate ``links (B, 2)`` and split it into consecutive chunks of ``chunk_size`` rows (one chunk if
    ``chunk_size`` is None or ``B <= chunk_size``)."""
    if not isinstance(links, Tensor) or links.dim() != 2 or links.size(1) != 2:
        raise ValueError(f"links must have shape (B, 2), got shape {tuple(getattr(links, 'shape', ()))}")
    if links.size(0) == 0:
        raise ValueError("links is empty: the contrastive loss needs at least one link")
    if chunk_size is None or links.size(0) <= chunk_size:
        return (links,)
    return links.split(chunk_size)


def mask_diagonal(logits: Tensor) -> Tensor:
    """``logits (B, B)`` with the diagonal replaced by a large negative number (finite, so that softmax
    gives it an exact zero without producing NaN in ``0 * log 0`` terms; ``-1e9`` as in the public
    code, or half the dtype minimum for float16)."""
    fill = max(-1e9, torch.finfo(logits.dtype).min / 2)
    eye = torch.eye(logits.size(0), dtype=torch.bool, device=logits.device)
    return logits.masked_fill(eye, fill)


class ICLLoss(nn.Module):
    """Bidirectional in-batch InfoNCE with negatives from both graphs, as MCLEA's ``icl_loss``.

    For L2-normalised ``h1 = emb[links[:, 0]]``, ``h2 = emb2[links[:, 1]]`` ``(B, d)`` and temperature ``t``:

    * ``loss_a`` = cross-entropy of the rows of ``[h1 h2^T | h1 h1^T] / t`` ``(B, 2B)`` with target ``i``
      (the positive ``h1_i . h2_i``), the diagonal of ``h1 h1^T`` (self-similarity) masked out;
    * ``loss_b`` likewise with ``[h2 h1^T | h2 h2^T] / t``;
    * ``loss = ab_weight * loss_a + (1 - ab_weight) * loss_b`` (means over rows).

    With ``chunk_size`` set and ``B > chunk_size``, the links are split into consecutive chunks of
    ``chunk_size`` links, each chunk is one batch (in-chunk negatives only) and the per-chunk losses are
    SUMMED, not averaged: this reproduces the public MCLEA code, which adds the losses of the 512-link
    batches of one epoch before a single optimiser step (so the loss scale grows with the number of chunks).
    Only the gathered rows are normalised: the cost is ``O(B d)``, not ``O(N d)``.
    """

    def __init__(self, temperature: float = 0.1, ab_weight: float = 0.5, chunk_size: int | None = None):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.ab_weight = ab_weight
        self.chunk_size = _check_chunk_size(chunk_size)

    def _chunk_loss(self, emb: Tensor, emb2: Tensor, links: Tensor) -> Tensor:
        h1 = F.normalize(emb[links[:, 0]], dim=1)
        h2 = F.normalize(emb2[links[:, 1]], dim=1)
        return self.from_similarities(h1 @ h2.t(), h1 @ h1.t(), h2 @ h2.t())

    def from_similarities(self, sim_ab: Tensor, sim_aa: Tensor, sim_bb: Tensor, keep: Tensor | None = None) -> Tensor:
        """The loss of one batch of ``B`` links from its cosine-similarity blocks ``(B, B)``: ``sim_ab[i, j] =
        h1_i . h2_j``, ``sim_aa = h1 h1^T``, ``sim_bb = h2 h2^T`` (what :meth:`forward` computes per chunk; for
        callers that already hold the similarities, e.g. of several embeddings that share blocks).

        ``keep (B,)`` bool: the loss of the kept links alone -- the same number as the sub-blocks ``[keep][:, keep]``
        would give (the other links are neither queries nor negatives), without gathering them."""
        t = self.temperature
        logits_ab = sim_ab / t
        logits_aa = mask_diagonal(sim_aa / t)
        logits_bb = mask_diagonal(sim_bb / t)
        target = torch.arange(sim_ab.size(0), device=logits_ab.device)
        if keep is None:
            loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), target)
            loss_b = F.cross_entropy(torch.cat([logits_ab.t(), logits_bb], dim=1), target)
            return self.ab_weight * loss_a + (1 - self.ab_weight) * loss_b
        fill = max(-1e9, torch.finfo(logits_ab.dtype).min / 2)  # finite: a dropped row's loss is 0 * finite
        dropped = ~keep.unsqueeze(0)  # (1, B): columns of links left out
        logits_ab = logits_ab.masked_fill(dropped, fill)
        logits_ba = logits_ab.t().masked_fill(dropped, fill)
        weight = keep.to(logits_ab.dtype) / keep.sum().clamp(min=1)
        loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa.masked_fill(dropped, fill)], dim=1), target,
                                 reduction="none")
        loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb.masked_fill(dropped, fill)], dim=1), target,
                                 reduction="none")
        return self.ab_weight * (loss_a * weight).sum() + (1 - self.ab_weight) * (loss_b * weight).sum()

    def forward(self, emb: Tensor, links: Tensor, emb2: Tensor | None = None) -> Tensor:
        """``emb (N, d)`` embeddings by global id, ``links (B, 2)`` long ``(kg1_id, kg2_id)``, optional
        ``emb2 (N, d)`` table for the right side (default ``emb``) -> scalar."""
        emb2 = emb if emb2 is None else emb2
        losses = [self._chunk_loss(emb, emb2, chunk) for chunk in link_chunks(links, self.chunk_size)]
        return losses[0] if len(losses) == 1 else torch.stack(losses).sum()
