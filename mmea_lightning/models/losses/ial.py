"""MCLEA's intra-modal alignment loss (IAL): KL from a modality's in-batch distribution to the joint one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .icl import _check_chunk_size, link_chunks, mask_diagonal

__all__ = ["IALLoss"]


def _batch_logits(emb: Tensor, links: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Rows ``[s_i s_j^T | s_i s_i^T]`` and ``[s_j s_i^T | s_j s_j^T]`` ``(B, 2B)`` over ``temperature`` for the
    normalised ``s_i = emb[links[:, 0]]``, ``s_j = emb[links[:, 1]]``, self-similarities masked."""
    s_i = F.normalize(emb[links[:, 0]], dim=1)
    s_j = F.normalize(emb[links[:, 1]], dim=1)
    ab = s_i @ s_j.t() / temperature
    aa = mask_diagonal(s_i @ s_i.t() / temperature)
    bb = mask_diagonal(s_j @ s_j.t() / temperature)
    return torch.cat([ab, aa], dim=1), torch.cat([ab.t(), bb], dim=1)


class IALLoss(nn.Module):
    """Pull each modality's in-batch similarity distribution towards the (detached) joint one.

    With ``P_a = [p_ab | p_aa]``, ``P_b = [p_ba | p_bb]`` ``(B, 2B)`` built from ``modal_emb`` as in
    :class:`~mmea_lightning.models.losses.icl.ICLLoss` (temperature ``t``) and ``Q_a``, ``Q_b`` likewise from
    ``joint_emb``:

    ``loss = zoom * (ab_weight * KL_a + (1 - ab_weight) * KL_b)``,
    ``KL_a = mean over all B x 2B elements of softmax(Q_a) * (log softmax(Q_a) - log softmax(P_a))``

    exactly as the public MCLEA code (``F.kl_div(..., reduction="none").mean()``: the mean over elements,
    i.e. the row-wise KL divided by ``2B``). ``Q`` is detached: gradients reach ``modal_emb`` only.
    ``chunk_size`` splits the links as in ``ICLLoss`` and SUMS the per-chunk losses.
    """

    def __init__(self, temperature: float = 4.0, ab_weight: float = 0.5, zoom: float = 0.1,
                 chunk_size: int | None = None):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.ab_weight = ab_weight
        self.zoom = zoom
        self.chunk_size = _check_chunk_size(chunk_size)

    def _chunk_loss(self, modal_emb: Tensor, joint_emb: Tensor, links: Tensor) -> Tensor:
        p_a, p_b = _batch_logits(modal_emb, links, self.temperature)
        with torch.no_grad():
            q_a, q_b = _batch_logits(joint_emb, links, self.temperature)
        loss_a = F.kl_div(F.log_softmax(p_a, dim=1), F.softmax(q_a, dim=1), reduction="none").mean()
        loss_b = F.kl_div(F.log_softmax(p_b, dim=1), F.softmax(q_b, dim=1), reduction="none").mean()
        return self.zoom * (self.ab_weight * loss_a + (1 - self.ab_weight) * loss_b)

    def forward(self, modal_emb: Tensor, joint_emb: Tensor, links: Tensor) -> Tensor:
        """``modal_emb (N, d)``, ``joint_emb (N, d')`` by global id, ``links (B, 2)`` long -> scalar."""
        losses = [self._chunk_loss(modal_emb, joint_emb, chunk) for chunk in link_chunks(links, self.chunk_size)]
        return losses[0] if len(losses) == 1 else torch.stack(losses).sum()
