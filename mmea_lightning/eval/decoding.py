"""One-to-one decoding of an alignment (greedy or Hungarian), reported apart from the ranking metrics.

Ranking lets several kg1 entities pick the same kg2 entity; one-to-one decoding forbids it, which is the
usual extra assumption of the 1-to-1 benchmarks. Both decoders need the dense ``(L, R)`` similarity matrix:
``O(L * R)`` memory (10,500 x 10,500 float32 = 440 MB; scipy's Hungarian solver also makes a float64 copy).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from mmea_lightning.similarity import cosine_similarity, greedy_matching, greedy_matching_sorted

__all__ = ["DECODERS", "greedy_one_to_one", "hungarian_one_to_one", "one_to_one_metrics", "similarity_matrix"]

DECODERS: tuple[str, ...] = ("greedy", "hungarian")
#: greedy sorts the whole flattened matrix at or below this many entries, else uses per-row candidates (same result;
#: the sort bounds the time when many rows prefer the same columns, the candidates need no ``L * R`` sort)
_MAX_SORTED = 1_000_000
#: refuse the Hungarian solver above this many entries (dense float32 + float64 copies)
_MAX_HUNGARIAN = 400_000_000
_TOPK = 32


def _check_ids(ids: Tensor, name: str, num_entities: int) -> Tensor:
    if not isinstance(ids, Tensor) or ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {getattr(ids, 'dtype', type(ids))}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_entities):
        raise ValueError(f"{name} must be entity ids in [0, {num_entities}) (rows of embeddings)")
    return ids.long()


def _check_sim(sim: Tensor) -> None:
    if not isinstance(sim, Tensor) or sim.dim() != 2:
        raise ValueError(f"sim must be a 2-D tensor (L, R), got shape {tuple(getattr(sim, 'shape', ()))}")
    if not sim.dtype.is_floating_point:
        raise ValueError(f"sim must be a floating-point tensor, got {sim.dtype}")
    if bool(torch.isnan(sim).any()):
        raise ValueError("sim contains NaN")


@torch.no_grad()
def similarity_matrix(embeddings: Tensor, left: Tensor, right: Tensor, chunk_size: int = 4096) -> Tensor:
    """Cosine similarities ``(L, R)`` float32 between ``embeddings[left]`` ``(L,)`` and ``embeddings[right]``
    ``(R,)``, computed ``chunk_size`` rows at a time (:func:`mmea_lightning.similarity.cosine_similarity`)."""
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
        raise ValueError(f"embeddings must have shape (N, d), got shape {tuple(getattr(embeddings, 'shape', ()))}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    num = embeddings.size(0)
    left = _check_ids(left, "left", num).reshape(-1).to(embeddings.device)
    right = _check_ids(right, "right", num).reshape(-1).to(embeddings.device)
    return cosine_similarity(embeddings[left], embeddings[right], chunk_size)


def _pairs(rows, cols) -> Tensor:
    """``(K, 2)`` long pairs sorted by row."""
    pairs = torch.as_tensor(np.stack([np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)], 1))
    return pairs[torch.argsort(pairs[:, 0])] if pairs.numel() else pairs.reshape(0, 2)


def _greedy_candidates(sim: Tensor, k: int = _TOPK, chunk_size: int = 1024) -> Tensor:
    """:func:`mmea_lightning.similarity.greedy_matching` over the rows of the dense ``sim`` (``k`` candidate
    columns per row, ``chunk_size`` rows ranked at once) -> pairs sorted by row."""
    sim = sim.cpu()
    pairs, _ = greedy_matching(lambda rows: sim[rows], sim.size(0), sim.size(1), k=k, chunk_size=chunk_size)
    return _pairs(pairs[:, 0].numpy(), pairs[:, 1].numpy())


@torch.no_grad()
def greedy_one_to_one(sim: Tensor) -> Tensor:
    """Greedy one-to-one matching of ``sim (L, R)``: repeatedly take the highest remaining pair, never reusing
    a row or a column, ties broken by row then column index (deterministic).

    Returns ``(min(L, R), 2)`` long pairs ``(row, col)`` sorted by row. Exact in both regimes of the shared
    matcher: one stable sort of the flattened matrix when ``L * R <= 1e6``
    (:func:`mmea_lightning.similarity.greedy_matching_sorted`), else lazily refreshed top-k candidates per row
    (:func:`mmea_lightning.similarity.greedy_matching`).
    """
    _check_sim(sim)
    if sim.numel() == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    return greedy_matching_sorted(sim) if sim.numel() <= _MAX_SORTED else _greedy_candidates(sim)


@torch.no_grad()
def hungarian_one_to_one(sim: Tensor) -> Tensor:
    """Maximum-total-similarity one-to-one matching of ``sim (L, R)`` (``scipy.optimize.linear_sum_assignment``,
    ``maximize=True``) -> ``(min(L, R), 2)`` long pairs ``(row, col)`` sorted by row.

    Dense: ``O(L * R)`` memory (scipy works on a float64 copy) and up to ``O(n^3)`` time; refused above
    ``4e8`` entries (use :func:`greedy_one_to_one`).
    """
    _check_sim(sim)
    if sim.numel() > _MAX_HUNGARIAN:
        raise ValueError(
            f"the Hungarian decoder needs the dense {sim.size(0)} x {sim.size(1)} matrix "
            f"(> {_MAX_HUNGARIAN:.0e} entries); use method='greedy'"
        )
    if bool(torch.isinf(sim).any()):
        raise ValueError("sim contains inf: the Hungarian decoder needs finite scores")
    if sim.numel() == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    rows, cols = linear_sum_assignment(sim.detach().cpu().numpy(), maximize=True)
    return _pairs(rows, cols)


@torch.no_grad()
def one_to_one_metrics(
    embeddings: Tensor,
    links: Tensor,
    *,
    method: str = "hungarian",
    prefix: str = "test_1to1",
    chunk_size: int = 4096,
) -> dict[str, float]:
    """Decode a one-to-one matching between the linked kg1 and kg2 entities and score it against the links.

    Rows are the distinct ``links[:, 0]``, candidates the distinct ``links[:, 1]`` (the standard protocol:
    candidates are the test links' kg2 entities), scored by cosine similarity.

    Args:
        embeddings: ``(N, d)`` embeddings of all entities, indexed by global id.
        links: ``(L, 2)`` long gold pairs ``(kg1_id, kg2_id)``.
        method: ``"greedy"`` or ``"hungarian"``.
        prefix: key prefix.
        chunk_size: rows of the similarity matrix computed at once.

    Returns:
        ``{prefix}/hits@1``: fraction of links whose kg1 entity is matched to its gold partner;
        ``{prefix}/precision``, ``{prefix}/recall``, ``{prefix}/f1``: matched pairs vs the distinct gold pairs
        (equal to hits@1 for square, duplicate-free links). Plain Python floats.
    """
    if method not in DECODERS:
        raise ValueError(f"unknown one-to-one decoding method {method!r}; valid methods are {list(DECODERS)}")
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
        raise ValueError(f"embeddings must have shape (N, d), got shape {tuple(getattr(embeddings, 'shape', ()))}")
    if not isinstance(links, Tensor) or links.dim() != 2 or links.size(1) != 2:
        raise ValueError(f"links must have shape (L, 2), got shape {tuple(getattr(links, 'shape', ()))}")
    if links.size(0) == 0:
        raise ValueError(f"the '{prefix}' split is empty: no links to decode")
    links = _check_ids(links, "links", embeddings.size(0)).cpu()
    left, left_pos = torch.unique(links[:, 0], return_inverse=True)
    right, right_pos = torch.unique(links[:, 1], return_inverse=True)
    if method == "hungarian" and left.numel() * right.numel() > _MAX_HUNGARIAN:
        raise ValueError(
            f"the Hungarian decoder needs a dense {left.numel()} x {right.numel()} matrix "
            f"(> {_MAX_HUNGARIAN:.0e} entries); use method='greedy'"
        )
    sim = similarity_matrix(embeddings, left, right, chunk_size)
    pairs = (hungarian_one_to_one if method == "hungarian" else greedy_one_to_one)(sim).cpu()

    match = torch.full((left.numel(),), -1, dtype=torch.long)
    match[pairs[:, 0]] = pairs[:, 1]
    hits = (match[left_pos] == right_pos).double().mean().item()
    gold = set(zip(left_pos.tolist(), right_pos.tolist(), strict=True))
    correct = sum((r, c) in gold for r, c in pairs.tolist())
    precision = correct / len(pairs) if len(pairs) else 0.0
    recall = correct / len(gold)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        f"{prefix}/hits@1": hits,
        f"{prefix}/precision": precision,
        f"{prefix}/recall": recall,
        f"{prefix}/f1": f1,
    }
