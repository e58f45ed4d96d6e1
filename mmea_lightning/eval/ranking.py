"""Tie-aware, chunked ranking of true counterparts by cosine similarity (optionally CSLS).

Ranks follow the PyKEEN convention: for a query whose true candidate has score ``t``,

* optimistic rank  = 1 + #{candidates with score > t},
* pessimistic rank = #{candidates with score >= t} (the true candidate included),
* realistic rank   = (optimistic + pessimistic) / 2.

A model that gives every candidate the same score therefore gets realistic rank ``(C + 1) / 2``
instead of looking perfect. Scores are computed in chunks of queries, so peak memory is
``O(chunk_size x num_candidates)`` whatever the number of queries. Identical candidate vectors are
scored once and share their score, so they always tie exactly (BLAS does not guarantee that).

Ties with a tolerance: a cosine is computed in float32 from L2-normalised vectors, and two vectors that point the
same way at different scales (``v`` and ``3 v``) normalise to vectors that differ in their last bits, so their
cosines with a query differ by a few ulps. Scores within ``TIE_TOLERANCE`` (``1e-6`` on the cosine scale, about 8
float32 ulps at 1.0; CSLS scores, which add four cosine-scale terms, use ``4 * TIE_TOLERANCE``) of the true score
therefore count as ties:

* optimistic rank  = 1 + #{candidates with score > t + tol},
* pessimistic rank = #{candidates with score >= t - tol}.

A collapsed model whose embeddings are all positive multiples of one vector thus gets the realistic rank
``(C + 1) / 2``, whatever the scales. Distinct scores closer than ``tol`` are below float32 resolution for
embeddings of a few hundred dimensions and are not meaningful orderings. ``tie_tolerance=0`` restores the
bit-exact comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mmea_lightning.similarity import similarity_chunks

__all__ = ["TIE_TOLERANCE", "RankResult", "check_ranking_options", "rank_targets", "rank_metrics"]

#: scores within this distance of the true score tie (cosine scale; see the module docstring)
TIE_TOLERANCE = 1e-6


@dataclass
class RankResult:
    """Per-query ranks of the true candidate.

    Attributes:
        optimistic: ``(Q,)`` float64, ``1 + #(scores > true score)``.
        pessimistic: ``(Q,)`` float64, ``#(scores >= true score)``, the true candidate included.
        num_candidates: number of candidates ``C`` each query was ranked against.
    """

    optimistic: Tensor
    pessimistic: Tensor
    num_candidates: int

    @property
    def realistic(self) -> Tensor:
        """``(Q,)`` float64 mean of the optimistic and pessimistic ranks (expected rank under random
        tie breaking)."""
        return (self.optimistic + self.pessimistic) / 2

    @property
    def num_queries(self) -> int:
        return int(self.optimistic.numel())


def _check_embeddings(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {tuple(x.shape)}")
    if x.size(0) == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): nothing to rank")
    if x.dtype.is_complex or x.dtype == torch.bool:
        raise ValueError(f"{name} must be a real-valued tensor, got dtype {x.dtype}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values (diverged model?)")


def check_ranking_options(csls_k: int, chunk_size: int, tie_tolerance: float) -> None:
    """Raise ``ValueError`` unless ``csls_k`` is a non-negative int, ``chunk_size`` a positive int and
    ``tie_tolerance`` a number in ``[0, 0.1)`` (the options every ranking function takes)."""
    if isinstance(csls_k, bool) or not isinstance(csls_k, int) or csls_k < 0:
        raise ValueError(f"csls_k must be a non-negative int, got {csls_k!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if not (isinstance(tie_tolerance, (int, float)) and 0 <= tie_tolerance < 0.1):
        raise ValueError(f"tie_tolerance must be a float in [0, 0.1), got {tie_tolerance!r}")


def _check_index(idx: Tensor, name: str, length: int, upper: int, upper_name: str) -> None:
    if not isinstance(idx, Tensor) or idx.dtype.is_floating_point or idx.dtype.is_complex:
        raise ValueError(f"{name} must be an integer tensor, got {getattr(idx, 'dtype', type(idx))}")
    if idx.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype torch.bool")
    if idx.dim() != 1 or idx.numel() != length:
        raise ValueError(f"{name} must have shape ({length},), got shape {tuple(idx.shape)}")
    if length and (int(idx.min()) < 0 or int(idx.max()) >= upper):
        raise ValueError(
            f"{name} must lie in [0, {upper}) ({upper_name}), got values in "
            f"[{int(idx.min())}, {int(idx.max())}]"
        )


class _Scorer:
    """Chunked cosine scores against L2-normalised candidates, with exact ties for identical rows.

    BLAS kernels do not guarantee that two identical candidate columns get bitwise-identical dot
    products (gemv/gemm may sum in different orders per column), which would turn exact ties into
    spurious strict orderings. The distinct candidate vectors are therefore scored once and the
    scores broadcast back to every copy.
    """

    def __init__(self, candidates: Tensor):
        unique, inverse = torch.unique(candidates, dim=0, return_inverse=True)
        has_duplicates = unique.size(0) < candidates.size(0)
        self.unique = unique if has_duplicates else candidates  # (U, d)
        self.inverse = inverse if has_duplicates else None  # (C,) candidate -> row of ``unique``
        self.num_candidates = candidates.size(0)

    def expand(self, scores: Tensor) -> Tensor:
        """``(..., U) -> (..., C)`` broadcast scores of distinct candidates to all candidates."""
        return scores if self.inverse is None else scores[..., self.inverse]


def _csls_radii(queries: Tensor, scorer: _Scorer, k: int, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Mean of the ``k`` largest cosines of each query over the candidates and vice versa.

    Both radii are obtained in a single chunked pass over the queries: ``r_C`` row by row, ``r_Q`` by
    keeping a running top-``k`` per (distinct) candidate.

    Args:
        queries: ``(Q, d)`` L2-normalised float32 queries.
        scorer: scorer of the ``C`` L2-normalised float32 candidates.
        k: neighbourhood size (clipped to ``C`` resp. ``Q``).
        chunk_size: number of queries per chunk.

    Returns:
        ``r_C`` of shape ``(Q,)`` and ``r_Q`` of shape ``(C,)``.
    """
    num_q = queries.size(0)
    k_c, k_q = min(k, scorer.num_candidates), min(k, num_q)
    r_c = queries.new_empty(num_q)
    top_q = queries.new_empty(0, scorer.unique.size(0))  # running (<= k_q, U) top cosines per candidate
    for rows, sim in similarity_chunks(queries, scorer.unique, chunk_size):  # (B, U) against distinct candidates
        r_c[rows] = scorer.expand(sim).topk(k_c, dim=1).values.mean(dim=1)
        pool = torch.cat([top_q, sim], dim=0)
        top_q = pool.topk(min(k_q, pool.size(0)), dim=0).values
    return r_c, scorer.expand(top_q.mean(dim=0))


@torch.no_grad()
def rank_targets(
    queries: Tensor,
    candidates: Tensor,
    targets: Tensor,
    *,
    csls_k: int = 0,
    chunk_size: int = 4096,
    tie_tolerance: float = TIE_TOLERANCE,
) -> RankResult:
    """Tie-aware rank of each query's true candidate by cosine similarity (or CSLS).

    Args:
        queries: ``(Q, d)`` query embeddings (L2-normalised here).
        candidates: ``(C, d)`` candidate embeddings (L2-normalised here).
        targets: ``(Q,)`` long, index into ``candidates`` of each query's true counterpart.
        csls_k: if ``> 0``, re-score with CSLS,
            ``csls(x, y) = 2 cos(x, y) - r_C(x) - r_Q(y)`` where ``r_C(x)`` (``r_Q(y)``) is the mean of
            the ``csls_k`` largest cosines of ``x`` over all candidates (of ``y`` over all queries).
        chunk_size: number of queries scored at once; peak memory is ``O(chunk_size x C)``.
        tie_tolerance: scores within this distance of the true score tie (``4x`` for CSLS scores); ``0`` compares
            bit-exactly.

    Returns:
        A :class:`RankResult` with ``(Q,)`` float64 optimistic and pessimistic ranks.

    Raises:
        ValueError: on empty inputs, mismatched shapes or dimensions, out-of-range targets, or
            non-finite embeddings.
    """
    _check_embeddings(queries, "queries")
    _check_embeddings(candidates, "candidates")
    if queries.size(1) != candidates.size(1):
        raise ValueError(
            f"queries and candidates must have the same dimension, got {queries.size(1)} "
            f"and {candidates.size(1)}"
        )
    num_q, num_c = queries.size(0), candidates.size(0)
    _check_index(targets, "targets", num_q, num_c, "number of candidates")
    check_ranking_options(csls_k, chunk_size, tie_tolerance)

    device = queries.device
    q = F.normalize(queries.to(torch.float32), dim=1)
    c = F.normalize(candidates.to(device=device, dtype=torch.float32), dim=1)
    targets = targets.to(device=device, dtype=torch.long)
    scorer = _Scorer(c)
    r_c = r_q = None
    tol = float(tie_tolerance)
    if csls_k > 0:
        r_c, r_q = _csls_radii(q, scorer, csls_k, chunk_size)
        tol *= 4  # 2 cos - r_C - r_Q: four cosine-scale terms, each with its own rounding

    # per-row counts are <= C; summing booleans into int32 is much faster than into int64 on CPU
    count_dtype = torch.int32 if num_c < 2**31 else torch.int64
    optimistic = torch.empty(num_q, dtype=torch.long, device=device)
    pessimistic = torch.empty(num_q, dtype=torch.long, device=device)
    for rows, unique_scores in similarity_chunks(q, scorer.unique, chunk_size):
        scores = scorer.expand(unique_scores)  # (B, C)
        if r_c is not None:
            scores = 2 * scores - r_c[rows, None] - r_q[None, :]
        # read the true score from the very chunk it is compared with, so exact ties stay ties
        true = scores.gather(1, targets[rows, None])  # (B, 1)
        optimistic[rows] = 1 + (scores > true + tol).sum(dim=1, dtype=count_dtype)
        pessimistic[rows] = (scores >= true - tol).sum(dim=1, dtype=count_dtype)
    return RankResult(optimistic.double(), pessimistic.double(), num_c)


def rank_metrics(ranks: RankResult, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Hits@k, MRR and MR from realistic ranks.

    Args:
        ranks: per-query ranks.
        ks: cut-offs for ``hits@k`` (fraction of queries with realistic rank ``<= k``).

    Returns:
        ``{"hits@k": ..., "mrr": ..., "mr": ...}`` as plain Python floats.
    """
    if ranks.num_queries == 0:
        raise ValueError("cannot compute metrics from zero ranks")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every k in ks must be a positive int, got {k!r}")
    realistic = ranks.realistic
    metrics = {f"hits@{k}": float((realistic <= k).double().mean()) for k in ks}
    metrics["mrr"] = float(realistic.reciprocal().mean())
    metrics["mr"] = float(realistic.mean())
    return metrics
