"""Intra-modal contrastive loss (ICL) shared by MCLEA, MEAformer and MPSEA (MCLEA's ``icl_loss``).

Performance (the losses are most of a training step on the 15K pairs): the similarity blocks of a batch come from
:func:`gram_blocks` (``a b^T``, ``a a^T``, ``b b^T`` in one call, batched over a leading dimension, the backward of a
self-similarity block one product instead of two), and the cross-entropy over ``[ab | aa]`` and ``[ba | bb]``
from :func:`icl_from_blocks`, whose backward is the closed form ``softmax - one-hot`` written straight into the block
gradients (autograd would keep and replay every masking, scaling and concatenation). Same losses and gradients as
the textbook formulation up to float rounding (``tests/test_losses_decoding.py``, ``tests/test_speed_equivalence.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from mmea_lightning.models.normalize import l2_normalize

__all__ = ["ICLLoss", "gram_blocks", "icl_from_blocks", "link_chunks", "mask_diagonal", "weighted_block_sum"]


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


def _fill_value(dtype: torch.dtype) -> float:
    return max(-1e9, torch.finfo(dtype).min / 2)


class _GramBlocks(torch.autograd.Function):
    """``(a b^T, a a^T, b b^T)`` for ``a, b (..., c, d)``; the self-similarity blocks' backward is one product,
    ``(G + G^T) a``, where autograd would take two (``G a`` and ``G^T a``)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        ctx.save_for_backward(a, b)
        ctx.set_materialize_grads(False)
        return a @ b.mT, a @ a.mT, b @ b.mT

    @staticmethod
    @once_differentiable
    def backward(ctx, g_ab: Tensor | None, g_aa: Tensor | None, g_bb: Tensor | None):  # type: ignore[override]
        a, b = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            parts = ([g_ab @ b] if g_ab is not None else []) + ([(g_aa + g_aa.mT) @ a] if g_aa is not None else [])
            grad_a = sum(parts[1:], parts[0]) if parts else torch.zeros_like(a)
        if ctx.needs_input_grad[1]:
            parts = ([g_ab.mT @ a] if g_ab is not None else []) + ([(g_bb + g_bb.mT) @ b] if g_bb is not None else [])
            grad_b = sum(parts[1:], parts[0]) if parts else torch.zeros_like(b)
        return grad_a, grad_b


def gram_blocks(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(a b^T, a a^T, b b^T)`` of ``a, b (..., c, d)`` (any leading batch dimensions), differentiable."""
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"gram_blocks needs a and b of one shape (..., c, d), got {tuple(a.shape)}, {tuple(b.shape)}")
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _GramBlocks.apply(a, b)
    return a @ b.mT, a @ a.mT, b @ b.mT


class _WeightedBlockSum(torch.autograd.Function):
    """``sum_m sim_m * (left_m right_m^T)`` for ``sim (M, ..., r, c)``, ``left (M, ..., r)``, ``right (M, ..., c)``
    (``right`` may be ``left`` itself: a self-similarity block), one ``(r, c)`` temporary per modality."""

    @staticmethod
    def forward(ctx, sim: Tensor, left: Tensor, right: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(sim, left, right)
        out = None
        for s, lw, rw in zip(sim, left, right):
            term = s * lw.unsqueeze(-1) * rw.unsqueeze(-2)
            out = term if out is None else out.add_(term)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        sim, left, right = ctx.saved_tensors
        grad_sim = None
        if ctx.needs_input_grad[0]:
            grad_sim = (left.unsqueeze(-1) * grad.unsqueeze(0)).mul_(right.unsqueeze(-2))
        grad_left, grad_right = torch.empty_like(left), torch.empty_like(right)
        for m in range(sim.shape[0]):
            gs = grad * sim[m]  # d out / d (left_i right_j) = grad_ij sim_ij
            grad_left[m] = (gs @ right[m].unsqueeze(-1)).squeeze(-1)
            grad_right[m] = (gs.mT @ left[m].unsqueeze(-1)).squeeze(-1)
        return grad_sim, grad_left, grad_right


def weighted_block_sum(sim: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``sum_m left_m[i] right_m[j] sim_m[i, j]`` -> ``(..., r, c)`` for ``sim (M, ..., r, c)``, ``left (M, ..., r)``,
    ``right (M, ..., c)``: the similarity block of the joint embeddings ``[w_m x^_m]_m`` from the per-modality blocks
    of the unit-norm ``x^_m`` (``w`` scaled by ``1 / |w|`` gives the joint's cosine), without the ``(M d)``-wide
    product, and without autograd's ``(M, r, c)`` intermediates."""
    if torch.is_grad_enabled() and (sim.requires_grad or left.requires_grad or right.requires_grad):
        return _WeightedBlockSum.apply(sim, left, right)
    return (sim * left.unsqueeze(-1) * right.unsqueeze(-2)).sum(0)


class _BlockICL(torch.autograd.Function):
    """The ICL of a batch of ``M`` similarity-block triples ``(M, c, c)`` with row weights ``(M, c)`` -> ``(M,)``.

    Rows of ``[ab | aa] / t`` and ``[ab^T | bb] / t`` (self-similarity and the columns of ``masked`` links filled
    with a large negative number), cross-entropy with target ``i``, weighted by ``weight[i]`` and summed;
    ``ab_weight`` mixes the two directions.

    The ``(c, 2c)`` logits are never built whole: they are formed in tiles of rows small enough to stay in the
    CPU cache (:data:`TILE_ELEMENTS`), once in the forward pass for the row's log-sum-exp and once more in the backward
    pass, which writes ``weight_i (softmax_ij - [j = i]) / t`` straight into the blocks' gradients. The blocks are
    read twice and the gradients written once, where autograd's path (concatenate, scale, mask, log-softmax, and
    their backward) sweeps several ``(c, 2c)`` temporaries -- memory-bound work that dominated the losses.
    """

    @staticmethod
    def forward(ctx, sim_ab: Tensor, sim_aa: Tensor, sim_bb: Tensor, weight: Tensor, masked: Tensor | None,
                temperature: float, ab_weight: float) -> Tensor:  # type: ignore[override]
        c = sim_ab.shape[-1]
        tile = _tile_rows(sim_ab)
        columns = None if masked is None else torch.cat([masked, masked], dim=-1).unsqueeze(-2)  # (M, 1, 2c)
        target = sim_ab.diagonal(dim1=-2, dim2=-1) / temperature  # (M, c): the positive's logit
        losses, lses = 0.0, []
        for share, own, transposed in ((ab_weight, sim_aa, False), (1.0 - ab_weight, sim_bb, True)):
            lse = sim_ab.new_empty(sim_ab.shape[:-1])
            for start in range(0, c, tile):
                stop = min(start + tile, c)
                logits = _logit_rows(sim_ab, own, start, stop, transposed, temperature, columns)
                lse[..., start:stop] = logits.logsumexp(dim=-1)
            losses = losses + share * ((lse - target) * weight).sum(-1)
            lses.append(lse)
        ctx.save_for_backward(sim_ab, sim_aa, sim_bb, weight, columns, *lses)
        ctx.temperature, ctx.ab_weight = temperature, ab_weight
        return losses

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        sim_ab, sim_aa, sim_bb, weight, columns, lse_a, lse_b = ctx.saved_tensors
        t, c = ctx.temperature, sim_ab.shape[-1]
        tile = _tile_rows(sim_ab)
        g_ab, g_aa, g_bb = torch.zeros_like(sim_ab), torch.empty_like(sim_aa), torch.empty_like(sim_bb)
        for share, own, g_own, lse, transposed in ((ctx.ab_weight, sim_aa, g_aa, lse_a, False),
                                                    (1.0 - ctx.ab_weight, sim_bb, g_bb, lse_b, True)):
            coef = (grad * share / t).unsqueeze(-1) * weight  # (M, c): d loss / d logits of row i, over t
            for start in range(0, c, tile):
                stop = min(start + tile, c)
                rows = _logit_rows(sim_ab, own, start, stop, transposed, t, columns)
                rows.sub_(lse[..., start:stop].unsqueeze(-1)).exp_().mul_(coef[..., start:stop].unsqueeze(-1))
                rows[..., start:stop].diagonal(dim1=-2, dim2=-1).sub_(coef[..., start:stop])  # - weight_i at i
                if transposed:
                    g_ab[..., :, start:stop] += rows[..., :c].mT
                else:
                    g_ab[..., start:stop, :] += rows[..., :c]
                g_own[..., start:stop, :] = rows[..., c:]
        return g_ab, g_aa, g_bb, None, None, None, None


#: elements of one tile of logits rows (``(M, rows, 2c)``), sized to stay in the CPU cache
TILE_ELEMENTS = 1 << 18


def _tile_rows(sim_ab: Tensor) -> int:
    batches = sim_ab[..., 0, 0].numel()
    return max(1, TILE_ELEMENTS // (batches * 2 * sim_ab.shape[-1]))


def _logit_rows(sim_ab: Tensor, own: Tensor, start: int, stop: int, transposed: bool, temperature: float,
                columns: Tensor | None) -> Tensor:
    """Rows ``start:stop`` of ``[ab | own] / t`` (``[ab^T | own] / t`` when ``transposed``), the self-similarity
    and the ``columns`` of left-out links filled with a large negative number: ``(M, rows, 2c)``, a new tensor."""
    c = sim_ab.shape[-1]
    cross = sim_ab[..., :, start:stop].mT if transposed else sim_ab[..., start:stop, :]
    rows = sim_ab.new_empty(*sim_ab.shape[:-2], stop - start, 2 * c)
    torch.div(cross, temperature, out=rows[..., :c])
    torch.div(own[..., start:stop, :], temperature, out=rows[..., c:])
    fill = _fill_value(rows.dtype)
    rows[..., c + start:c + stop].diagonal(dim1=-2, dim2=-1).fill_(fill)
    if columns is not None:
        rows.masked_fill_(columns, fill)
    return rows


def icl_from_blocks(sim_ab: Tensor, sim_aa: Tensor, sim_bb: Tensor, temperature: float, ab_weight: float = 0.5,
                    keep: Tensor | None = None, active: Tensor | None = None) -> Tensor:
    """The ICL of ``M`` batches of ``c`` links at once, from their cosine-similarity blocks.

    Args:
        sim_ab / sim_aa / sim_bb: ``(M, c, c)`` blocks ``h1 h2^T``, ``h1 h1^T``, ``h2 h2^T`` (any leading dims).
        temperature / ab_weight: as :class:`ICLLoss`.
        keep: ``(M, c)`` bool, the links taking part (the others are neither queries nor negatives); default all.
        active: ``(M,)`` bool, batches whose loss is computed (an inactive one gives exactly 0, no gradient).

    Returns:
        ``(M,)`` losses: each the mean over its kept links of ``ab_weight`` times the cross-entropy of the row of
        ``[ab | aa] / t`` and ``1 - ab_weight`` times that of ``[ba | bb] / t`` -- :meth:`ICLLoss.from_similarities`
        per batch.
    """
    c = sim_ab.shape[-1]
    lead = sim_ab.shape[:-2]
    if keep is None:
        weight = sim_ab.new_full((*lead, c), 1.0 / c)
        masked = None
    else:
        keep = keep.to(torch.bool).expand(*lead, c)
        weight = keep.to(sim_ab.dtype) / keep.sum(-1, keepdim=True).clamp(min=1).to(sim_ab.dtype)
        masked = None if bool(keep.all()) else ~keep
    if active is not None:
        weight = weight * active.to(weight.dtype).unsqueeze(-1)
    return _BlockICL.apply(sim_ab, sim_aa, sim_bb, weight, masked, float(temperature), float(ab_weight))


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
        h1 = l2_normalize(emb[links[:, 0]], dim=1)
        h2 = l2_normalize(emb2[links[:, 1]], dim=1)
        return self.from_similarities(*gram_blocks(h1, h2))

    def from_similarities(self, sim_ab: Tensor, sim_aa: Tensor, sim_bb: Tensor, keep: Tensor | None = None) -> Tensor:
        """The loss of one batch of ``B`` links from its cosine-similarity blocks ``(B, B)``: ``sim_ab[i, j] =
        h1_i . h2_j``, ``sim_aa = h1 h1^T``, ``sim_bb = h2 h2^T`` (what :meth:`forward` computes per chunk; for
        callers that already hold the similarities, e.g. of several embeddings that share blocks).

        ``keep (B,)`` bool: the loss of the kept links alone -- the same number as the sub-blocks ``[keep][:, keep]``
        would give (the other links are neither queries nor negatives), without gathering them.
        :func:`icl_from_blocks` does the same for many batches at once."""
        return icl_from_blocks(sim_ab, sim_aa, sim_bb, self.temperature, self.ab_weight, keep)

    def paired(self, tokens: Tensor, keep: Tensor | None = None,
               weights: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The ICL of ``M`` embeddings of the same links at once, and with ``weights`` that of their joint embedding.

        Args:
            tokens: ``(M, 2B, d)``, row ``i`` and row ``B + i`` the two entities of link ``i`` (not normalised).
            keep: ``(M, B)`` bool, the links each embedding's loss keeps (within each chunk: the others are neither
                queries nor negatives, and a chunk with fewer than two kept links adds nothing); default all.
            weights: ``(2B, M)`` modality weights ``w``: also return the loss of the joint embeddings
                ``[w_m x_m / |x_m|]_m`` (normalised, as :meth:`forward` does).

        Returns:
            ``(M,)`` losses -- each what :meth:`forward` gives for that embedding (same chunks, summed) -- and the
            joint embedding's loss (or ``None``).

        Work: per chunk, the similarity blocks of every embedding come from one batched product
        (:func:`gram_blocks`; chunks are ``split`` views, so the backward pass concatenates instead of scattering
        into zeros), their losses from one :func:`icl_from_blocks` call, and the joint embedding's cosine is
        ``sum_m w_m(u) w_m(v) cos(x_m,u, x_m,v) / (|w(u)| |w(v)|)`` (:func:`weighted_block_sum`): once the
        per-embedding blocks are known, the joint's cost is a weighted sum instead of an ``(M d)``-wide product.
        """
        batch = tokens.shape[1] // 2
        size = self.chunk_size or batch
        t, ab_weight = self.temperature, self.ab_weight
        left, right = l2_normalize(tokens, dim=-1).split(batch, dim=1)  # split, not sliced: no zero-filled grads
        lefts, rights = left.split(size, dim=1), right.split(size, dim=1)  # (M, c, d)
        keeps = keep.split(size, dim=1) if keep is not None else [None] * len(lefts)
        if weights is not None:
            scale = (weights / weights.norm(dim=1, keepdim=True)).t()  # (M, 2B): w_m / |w|
            scale_l, scale_r = scale[:, :batch].split(size, dim=1), scale[:, batch:].split(size, dim=1)
        losses, joint = [], []
        for chunk, (a, b, kept) in enumerate(zip(lefts, rights, keeps)):
            sim_ab, sim_aa, sim_bb = gram_blocks(a, b)  # (M, c, c)
            active = None if kept is None else kept.sum(-1) >= 2
            losses.append(icl_from_blocks(sim_ab, sim_aa, sim_bb, t, ab_weight, keep=kept, active=active))
            if weights is not None:
                wa, wb = scale_l[chunk], scale_r[chunk]
                joint.append(icl_from_blocks(weighted_block_sum(sim_ab, wa, wb), weighted_block_sum(sim_aa, wa, wa),
                                             weighted_block_sum(sim_bb, wb, wb), t, ab_weight))
        total = losses[0] if len(losses) == 1 else torch.stack(losses).sum(0)
        return total, (None if weights is None else joint[0] if len(joint) == 1 else torch.stack(joint).sum())

    def forward(self, emb: Tensor, links: Tensor, emb2: Tensor | None = None) -> Tensor:
        """``emb (N, d)`` embeddings by global id, ``links (B, 2)`` long ``(kg1_id, kg2_id)``, optional
        ``emb2 (N, d)`` table for the right side (default ``emb``) -> scalar."""
        emb2 = emb if emb2 is None else emb2
        losses = [self._chunk_loss(emb, emb2, chunk) for chunk in link_chunks(links, self.chunk_size)]
        return losses[0] if len(losses) == 1 else torch.stack(losses).sum()
