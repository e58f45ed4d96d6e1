"""Greedy one-to-one matching from a row-score function, without the dense ``L x R`` matrix.

Every seed generator picks pairs the same way: repeatedly take the most similar remaining pair whose two entities
are both still free (EVA's visual pivoting, PSQE's cluster and global sampling, the neighbourhood expansion).
:func:`mmea_lightning.eval.decoding.greedy_one_to_one` does this on a dense similarity matrix; the seed generators
compare all ~19k x 19.5k entity pairs of a DBP15K pair and only need the first ~1000 picks, so this version asks a
``score_rows`` function for chunks of rows, keeps the ``k`` best columns per row and refills a row from the still
free columns when its candidates are used up. The order is the same as ``greedy_one_to_one``'s (score descending,
then row, then column), so the result is identical (the tests check it).

Ties are broken by position, so callers pass their entities in a seeded random order (:func:`shuffled`), never in id
order: in DBP15K the gold-linked entities have the lowest ids (KG1 ``0..10499`` are linked to KG2 ``10500..``), and
thousands of pairs tie at cosine 1.0 on translated names -- breaking those ties by id would favour gold links.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from mmea_lightning.eval.decoding import _sorted_topk

__all__ = ["greedy_matching", "shuffled"]


def shuffled(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``ids`` in a random order drawn from ``rng`` (so that score ties are not broken by entity id)."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids[rng.permutation(len(ids))]


@torch.no_grad()
def greedy_matching(
    score_rows: Callable[[Tensor], Tensor],
    num_rows: int,
    num_cols: int,
    limit: int | None = None,
    min_score: float | None = None,
    k: int = 32,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Greedy one-to-one matching of a ``num_rows x num_cols`` score matrix given by rows.

    Args:
        score_rows: ``rows (c,) long -> (c, num_cols)`` float scores of those rows against every column.
        num_rows / num_cols: the matrix shape.
        limit: stop after this many pairs (``None``: until rows or columns run out).
        min_score: only pairs scoring strictly above it are taken (``None``: any finite score).
        k: candidate columns kept per row (a row is refilled from the free columns when they are all taken).
        chunk_size: rows scored at once (peak extra memory ``O(chunk_size * num_cols)``).

    Returns:
        ``(K, 2)`` long ``(row, col)`` pairs in pick order (score descending, ties by row then column) and their
        ``(K,)`` float scores.
    """
    empty = torch.zeros(0, 2, dtype=torch.long), torch.zeros(0)
    if num_rows == 0 or num_cols == 0 or (limit is not None and limit <= 0):
        return empty
    k = max(1, min(k, num_cols))
    floor = -math.inf if min_score is None else float(min_score)
    cand_vals: list[list[float]] = []
    cand_cols: list[list[int]] = []
    for start in range(0, num_rows, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, num_rows))
        vals, idx = _sorted_topk(_checked(score_rows(rows), len(rows), num_cols), k)
        cand_vals.extend(vals.tolist())
        cand_cols.extend(idx.tolist())
    pointer = [0] * num_rows
    heap = [(-cand_vals[i][0], i, cand_cols[i][0]) for i in range(num_rows) if cand_vals[i][0] > floor]
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
            scores = _checked(score_rows(torch.tensor([i])), 1, num_cols)[0, free]
            vals, idx = _sorted_topk(scores.unsqueeze(0), min(k, free.numel()))
            cand_vals[i], cand_cols[i], p = vals[0].tolist(), free[idx[0]].tolist(), 0
        pointer[i] = p
        if cand_vals[i][p] > floor:  # else the row has nothing left above the floor
            heapq.heappush(heap, (-cand_vals[i][p], i, cand_cols[i][p]))
    if not out_rows:
        return empty
    pairs = torch.tensor(np.stack([out_rows, out_cols], axis=1), dtype=torch.long)
    return pairs, torch.tensor(out_scores, dtype=torch.float32)


def _checked(scores: Tensor, rows: int, cols: int) -> Tensor:
    if tuple(scores.shape) != (rows, cols):
        raise ValueError(f"score_rows returned shape {tuple(scores.shape)}, expected {(rows, cols)}")
    scores = scores.float()
    if bool(torch.isnan(scores).any()):
        raise ValueError("score_rows returned NaN scores")
    return scores
