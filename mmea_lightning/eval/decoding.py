"""One-to-one decoding of an alignment (greedy or Hungarian), reported apart from the ranking metrics.

Ranking lets several kg1 entities pick the same kg2 entity; one-to-one decoding forbids it, which is the
usual extra assumption of the 1-to-1 benchmarks. Both decoders need the dense ``(L, R)`` similarity matrix:
``O(L * R)`` memory (10,500 x 10,500 float32 = 440 MB; scipy's Hungarian solver also makes a float64 copy).
"""

from __future__ import annotations

import heapq

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["DECODERS", "greedy_one_to_one", "hungarian_one_to_one", "one_to_one_metrics", "similarity_matrix"]

DECODERS: tuple[str, ...] = ("greedy", "hungarian")
#: greedy sorts the whole flattened matrix at or below this many entries, else uses per-row candidates
_MAX_SORTED = 1_000_000  # above this, the top-k candidate path is faster (same result)
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
    ``(R,)``, computed ``chunk_size`` rows at a time (peak extra memory ``O(chunk_size * (R + d))``)."""
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
        raise ValueError(f"embeddings must have shape (N, d), got shape {tuple(getattr(embeddings, 'shape', ()))}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    num = embeddings.size(0)
    left = _check_ids(left, "left", num).reshape(-1).to(embeddings.device)
    right = _check_ids(right, "right", num).reshape(-1).to(embeddings.device)
    right_emb = F.normalize(embeddings[right].float(), dim=1)
    sim = torch.empty(left.numel(), right.numel(), dtype=torch.float32, device=embeddings.device)
    for start in range(0, left.numel(), chunk_size):
        rows = F.normalize(embeddings[left[start : start + chunk_size]].float(), dim=1)
        sim[start : start + chunk_size] = rows @ right_emb.t()
    return sim


def _pairs(rows, cols) -> Tensor:
    """``(K, 2)`` long pairs sorted by row."""
    pairs = torch.as_tensor(np.stack([np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)], 1))
    return pairs[torch.argsort(pairs[:, 0])] if pairs.numel() else pairs.reshape(0, 2)


def _greedy_sorted(sim: Tensor) -> Tensor:
    """Greedy matching by one stable descending sort of all ``L * R`` scores (ties: row, then column, since
    the flattened index is row-major). The sorted edges are scanned in blocks; within a block, an edge
    whose row and column both occur there for the first time (among edges still free) is taken by the
    sequential greedy whatever happens before it, so all such edges are matched at once."""
    num_rows, num_cols = sim.shape
    order = torch.argsort(sim.reshape(-1), descending=True, stable=True).cpu().numpy()
    row_used = np.zeros(num_rows, dtype=bool)
    col_used = np.zeros(num_cols, dtype=bool)
    out_rows, out_cols = [], []
    remaining = min(num_rows, num_cols)
    block = 1 << 16
    for start in range(0, order.size, block):
        if remaining == 0:
            break
        rows, cols = np.divmod(order[start : start + block], num_cols)
        while rows.size:
            keep = ~(row_used[rows] | col_used[cols])
            rows, cols = rows[keep], cols[keep]
            if not rows.size:
                break
            first = np.zeros(rows.size, dtype=bool)
            first[np.unique(rows, return_index=True)[1]] = True
            first_col = np.zeros(rows.size, dtype=bool)
            first_col[np.unique(cols, return_index=True)[1]] = True
            take = first & first_col
            row_used[rows[take]] = True
            col_used[cols[take]] = True
            out_rows.append(rows[take])
            out_cols.append(cols[take])
            remaining -= int(take.sum())
    if not out_rows:
        return torch.zeros(0, 2, dtype=torch.long)
    return _pairs(np.concatenate(out_rows), np.concatenate(out_cols))


def _sorted_topk(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per row of ``values (n, C)``, the ``k`` best entries ordered by (value desc, column asc), exactly
    (``torch.topk`` alone may pick any of several tied entries at the k-th place) -> ``(n, k)`` values, columns."""
    vals, idx = torch.topk(values, k, dim=1)
    idx, perm = torch.sort(idx, dim=1)  # column order, then a stable sort by value
    vals = vals.gather(1, perm)
    vals, perm = torch.sort(vals, dim=1, descending=True, stable=True)
    idx = idx.gather(1, perm)
    ambiguous = ((values >= vals[:, -1:]).sum(1) > k).nonzero().flatten()  # ties across the k-th place
    if ambiguous.numel():
        full_vals, full_idx = torch.sort(values[ambiguous], dim=1, descending=True, stable=True)
        vals[ambiguous], idx[ambiguous] = full_vals[:, :k], full_idx[:, :k]
    return vals, idx


def _greedy_candidates(sim: Tensor, k: int = _TOPK, chunk_size: int = 1024) -> Tensor:
    """Greedy matching with a lazy priority queue over per-row candidate lists (``k`` best columns per row).

    The heap holds one entry ``(-score, row, col)`` per unmatched row (its best candidate not yet known to
    be taken), so the popped entry is the best remaining edge in the order (score desc, row asc, col asc)
    unless its column is taken, in which case the row moves to its next candidate. A row whose list is
    exhausted gets the next ``k`` best of the still-free columns. Memory ``O(L * k)`` beyond ``sim``.
    """
    sim = sim.cpu()
    num_rows, num_cols = sim.shape
    k = min(k, num_cols)
    cand_vals: list[list[float]] = []
    cand_cols: list[list[int]] = []
    for start in range(0, num_rows, chunk_size):
        vals, idx = _sorted_topk(sim[start : start + chunk_size], k)
        cand_vals.extend(vals.tolist())
        cand_cols.extend(idx.tolist())
    pointer = [0] * num_rows
    heap = [(-cand_vals[i][0], i, cand_cols[i][0]) for i in range(num_rows)]
    heapq.heapify(heap)
    col_used = np.zeros(num_cols, dtype=bool)
    out_rows, out_cols = [], []
    remaining = min(num_rows, num_cols)
    while remaining and heap:
        _, i, j = heapq.heappop(heap)
        if not col_used[j]:
            col_used[j] = True
            out_rows.append(i)
            out_cols.append(j)
            remaining -= 1
            continue
        cols, p = cand_cols[i], pointer[i] + 1
        while p < len(cols) and col_used[cols[p]]:
            p += 1
        if p == len(cols):  # refill from the free columns
            free = torch.from_numpy(np.flatnonzero(~col_used))
            vals, idx = _sorted_topk(sim[i, free].unsqueeze(0), min(k, free.numel()))
            cand_vals[i], cand_cols[i], p = vals[0].tolist(), free[idx[0]].tolist(), 0
        pointer[i] = p
        heapq.heappush(heap, (-cand_vals[i][p], i, cand_cols[i][p]))
    return _pairs(out_rows, out_cols)


@torch.no_grad()
def greedy_one_to_one(sim: Tensor) -> Tensor:
    """Greedy one-to-one matching of ``sim (L, R)``: repeatedly take the highest remaining pair, never reusing
    a row or a column, ties broken by row then column index (deterministic).

    Returns ``(min(L, R), 2)`` long pairs ``(row, col)`` sorted by row. Exact in both regimes: one stable sort
    of the flattened matrix when ``L * R <= 2e7``, else lazily refreshed top-k candidates per row.
    """
    _check_sim(sim)
    if sim.numel() == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    return _greedy_sorted(sim) if sim.numel() <= _MAX_SORTED else _greedy_candidates(sim)


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
