"""Chunked similarity, exact top-k and greedy one-to-one matching: the one implementation every layer uses.

Entity alignment compares every entity of one graph with every entity of the other: ~10k x 10k pairs on a benchmark
pair, too many for one dense matrix at evaluation time and far too many for the seed generators, which rank ~19k x
19.5k pairs. This module holds the shared pieces, so that the evaluator (:mod:`mmea_lightning.eval`), the seed
generators (:mod:`mmea_lightning.seeds`) and the iterative expansion (:mod:`mmea_lightning.lightning.iterative`) run
the same code:

* :func:`similarity_chunks`: queries x candidates, ``chunk_size`` query rows at a time (peak extra memory
  ``O(chunk_size * C)``); :func:`cosine_similarity` and :func:`mutual_nearest_neighbours` are built on it.
* :func:`sorted_topk` / :func:`top_k_rows`: the ``k`` best columns per row, ordered by (score desc, column asc)
  exactly -- ``torch.topk`` alone may return any of several entries tied at the ``k``-th place.
* :func:`greedy_matching`: repeatedly take the best remaining pair whose row and column are both still free (ties by
  row, then column), from a row-score function, so the dense matrix is never needed. :func:`greedy_matching_sorted`
  finds the same pairs on a dense matrix by one sort of all its scores: bounded time when many rows prefer the same
  columns (where the per-row candidate lists of :func:`greedy_matching` are refilled again and again), for matrices
  small enough to sort.

A *row-score function* (:data:`ScoreRows`) maps ``rows (c,) long`` to the ``(c, C)`` scores of those rows against
every column; a dense matrix ``sim`` is ``lambda rows: sim[rows]``.

It sits at the bottom of the package (see ``docs/architecture.md``): it imports only torch and numpy, never another
``mmea_lightning`` module.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ScoreRows", "cosine_similarity", "greedy_matching", "greedy_matching_sorted", "mutual_nearest_neighbours",
           "normalize_rows", "row_chunks", "similarity_chunks", "sorted_topk", "top_k_rows"]

#: ``rows (c,) long -> (c, C)`` scores of those rows against every column
ScoreRows = Callable[[Tensor], Tensor]


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return int(chunk_size)


def _check_matrix(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {tuple(getattr(x, 'shape', ()))}")


def normalize_rows(x: Tensor) -> Tensor:
    """``(n, d) -> (n, d)`` float32 rows of ``x`` scaled to unit L2 norm (zero rows stay zero)."""
    return F.normalize(x.float(), dim=1)


def row_chunks(num_rows: int, chunk_size: int) -> Iterator[slice]:
    """Consecutive ``slice`` s of at most ``chunk_size`` rows covering ``range(num_rows)``."""
    chunk_size = _check_chunk_size(chunk_size)
    for start in range(0, num_rows, chunk_size):
        yield slice(start, min(start + chunk_size, num_rows))


def similarity_chunks(queries: Tensor, candidates: Tensor, chunk_size: int) -> Iterator[tuple[slice, Tensor]]:
    """Inner products of ``queries (Q, d)`` with ``candidates (C, d)``, ``chunk_size`` query rows at a time.

    Yields ``(rows, scores)``: the ``slice`` of query rows and their ``(len(rows), C)`` scores
    ``queries[rows] @ candidates.T``. Cosine similarities when both sides are L2-normalised (:func:`normalize_rows`).
    """
    _check_matrix(queries, "queries")
    _check_matrix(candidates, "candidates")
    if queries.size(1) != candidates.size(1):
        raise ValueError(f"queries and candidates must have the same width, got {queries.size(1)} "
                         f"and {candidates.size(1)}")
    right = candidates.t()
    for rows in row_chunks(queries.size(0), chunk_size):
        yield rows, queries[rows] @ right


@torch.no_grad()
def cosine_similarity(queries: Tensor, candidates: Tensor, chunk_size: int = 4096) -> Tensor:
    """The dense ``(Q, C)`` float32 cosine similarities of ``queries (Q, d)`` and ``candidates (C, d)``, computed
    ``chunk_size`` rows at a time (``O(Q * C)`` memory for the result)."""
    lhs, rhs = normalize_rows(queries), normalize_rows(candidates)
    sim = torch.empty(lhs.size(0), rhs.size(0), dtype=torch.float32, device=lhs.device)
    for rows, scores in similarity_chunks(lhs, rhs, chunk_size):
        sim[rows] = scores
    return sim


@torch.no_grad()
def mutual_nearest_neighbours(queries: Tensor, candidates: Tensor, chunk_size: int = 4096) -> Tensor:
    """``(P, 2)`` long index pairs ``(i, j)``: query ``i`` and candidate ``j`` are each other's nearest neighbour by
    cosine similarity (sorted by ``i``).

    ``queries (Q, d)``, ``candidates (C, d)``; memory ``O(chunk_size * C)``; ties go to the lowest index
    (``argmax``), so the result is deterministic.
    """
    lhs, rhs = normalize_rows(queries), normalize_rows(candidates)
    device = lhs.device
    if lhs.size(0) == 0 or rhs.size(0) == 0:
        return torch.zeros(0, 2, dtype=torch.long, device=device)
    best_col = torch.empty(lhs.size(0), dtype=torch.long, device=device)
    col_best = torch.full((rhs.size(0),), -float("inf"), device=device)
    col_arg = torch.zeros(rhs.size(0), dtype=torch.long, device=device)
    for rows, sim in similarity_chunks(lhs, rhs, chunk_size):
        best_col[rows] = sim.argmax(dim=1)
        value, arg = sim.max(dim=0)
        better = value > col_best
        col_best = torch.where(better, value, col_best)
        col_arg = torch.where(better, arg + rows.start, col_arg)
    query = torch.arange(lhs.size(0), device=device)
    mutual = col_arg[best_col] == query
    return torch.stack([query[mutual], best_col[mutual]], dim=1)


def sorted_topk(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
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


def _scored(score_rows: ScoreRows, rows: Tensor, num_cols: int) -> Tensor:
    """``score_rows(rows)``, checked: shape ``(len(rows), num_cols)``, floating point, no NaN."""
    scores = score_rows(rows)
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (len(rows), num_cols):
        raise ValueError(f"score_rows returned shape {tuple(getattr(scores, 'shape', ()))}, "
                         f"expected {(len(rows), num_cols)}")
    if not scores.dtype.is_floating_point:
        raise ValueError(f"score_rows must return floating-point scores, got {scores.dtype}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("score_rows returned NaN scores")
    return scores


@torch.no_grad()
def top_k_rows(score_rows: ScoreRows, num_rows: int, num_cols: int, k: int,
               chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """The ``k`` best columns of every row of a ``num_rows x num_cols`` score matrix given by rows, scored
    ``chunk_size`` rows at a time -> ``(num_rows, k)`` values and columns ordered as :func:`sorted_topk`
    (``k`` is clipped to ``num_cols``)."""
    k = min(k, num_cols)
    vals, cols = [], []
    for rows in row_chunks(num_rows, chunk_size):
        v, c = sorted_topk(_scored(score_rows, torch.arange(rows.start, rows.stop), num_cols), k)
        vals.append(v)
        cols.append(c)
    if not vals:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(vals), torch.cat(cols)


@torch.no_grad()
def greedy_matching(
    score_rows: ScoreRows,
    num_rows: int,
    num_cols: int,
    limit: int | None = None,
    min_score: float | None = None,
    k: int = 32,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Greedy one-to-one matching of a ``num_rows x num_cols`` score matrix given by rows.

    Repeatedly takes the highest remaining pair whose row and column are both free, ties broken by row then column
    (deterministic). A lazy priority queue holds one entry ``(-score, row, col)`` per unmatched row, its best
    candidate not yet known to be taken; the popped entry is the best remaining pair unless its column is taken, in
    which case the row moves to its next candidate. A row whose ``k`` candidates are all taken gets the ``k`` best of
    the still free columns. Memory ``O(num_rows * k)`` plus one chunk of scores.

    Args:
        score_rows: ``rows (c,) long -> (c, num_cols)`` float scores of those rows against every column.
        num_rows / num_cols: the matrix shape.
        limit: stop after this many pairs (``None``: until rows or columns run out).
        min_score: only pairs scoring strictly above it are taken (``None``: every pair, ``-inf`` included).
        k: candidate columns kept per row.
        chunk_size: rows scored at once (peak extra memory ``O(chunk_size * num_cols)``).

    Returns:
        ``(K, 2)`` long ``(row, col)`` pairs in pick order (score descending, ties by row then column) and their
        ``(K,)`` scores (the dtype ``score_rows`` returns).
    """
    empty = torch.zeros(0, 2, dtype=torch.long), torch.zeros(0)
    if num_rows == 0 or num_cols == 0 or (limit is not None and limit <= 0):
        return empty
    k = max(1, min(k, num_cols))
    top_vals, top_cols = top_k_rows(score_rows, num_rows, num_cols, k, chunk_size)
    dtype = top_vals.dtype
    cand_vals: list[list[float]] = top_vals.tolist()
    cand_cols: list[list[int]] = top_cols.tolist()

    def above_floor(value: float) -> bool:
        return min_score is None or value > min_score

    pointer = [0] * num_rows
    heap = [(-cand_vals[i][0], i, cand_cols[i][0]) for i in range(num_rows) if above_floor(cand_vals[i][0])]
    heapq.heapify(heap)
    col_used = np.zeros(num_cols, dtype=bool)
    out_rows: list[int] = []
    out_cols: list[int] = []
    out_scores: list[float] = []
    wanted = min(num_rows, num_cols) if limit is None else min(limit, num_rows, num_cols)
    while heap and len(out_rows) < wanted:
        neg, i, j = heapq.heappop(heap)
        if not col_used[j]:
            col_used[j] = True
            out_rows.append(i)
            out_cols.append(j)
            out_scores.append(-neg)
            continue
        cols, p = cand_cols[i], pointer[i] + 1
        while p < len(cols) and col_used[cols[p]]:
            p += 1
        if p == len(cols):  # every candidate of row i is taken: its k best among the free columns
            free = torch.from_numpy(np.flatnonzero(~col_used))
            if free.numel() == 0:
                break
            scores = _scored(score_rows, torch.tensor([i]), num_cols)[0, free.to(top_vals.device)]
            vals, idx = sorted_topk(scores.unsqueeze(0), min(k, free.numel()))
            cand_vals[i], cand_cols[i], p = vals[0].tolist(), free[idx[0].cpu()].tolist(), 0
        pointer[i] = p
        if above_floor(cand_vals[i][p]):  # else the row has nothing left above the floor
            heapq.heappush(heap, (-cand_vals[i][p], i, cand_cols[i][p]))
    if not out_rows:
        return empty
    pairs = torch.tensor(np.stack([out_rows, out_cols], axis=1), dtype=torch.long)
    return pairs, torch.tensor(out_scores, dtype=dtype)


@torch.no_grad()
def greedy_matching_sorted(sim: Tensor) -> Tensor:
    """The pairs :func:`greedy_matching` takes on the dense ``sim (L, R)`` (no limit, no floor), found by one stable
    descending sort of all ``L * R`` scores (ties: row, then column, since the flattened index is row-major) ->
    ``(min(L, R), 2)`` long ``(row, col)`` pairs sorted by row.

    The sorted edges are scanned in blocks; within a block, an edge whose row and column both occur there for the
    first time (among edges still free) is taken by the sequential greedy whatever happens before it, so all such
    edges are matched at once. ``O(L * R)`` time and memory for the sort.
    """
    _check_matrix(sim, "sim")
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
    rows, cols = np.concatenate(out_rows), np.concatenate(out_cols)
    by_row = np.argsort(rows, kind="stable")
    return torch.from_numpy(np.stack([rows[by_row], cols[by_row]], axis=1).astype(np.int64))
