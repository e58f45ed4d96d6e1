"""Every evaluation protocol from one set of similarity blocks: each cosine is computed once per evaluation.

The six protocols of :mod:`~mmea_lightning.eval.evaluator` rank slices of the same cosines:

* ``all`` ranks each link's kg1 entity against every kg2 entity: the ``L x N2`` *l2r block*. ``standard`` ranks it
  against the linked kg2 entities only, a sub-block of columns (the *standard block* ``S``, ``L x L`` for one-to-one
  links).
* ``r2l`` ranks each link's kg2 entity against the linked kg1 entities: for one-to-one links ``S`` transposed, counted
  down its columns. ``all_r2l`` adds the kg1 entities outside the links (``L x (N1 - L)``).
* ``csls`` / ``csls_r2l`` re-score ``S`` (along its rows, resp. down its columns) with radii from the top-k of its
  rows and columns.

So all six protocols on one-to-one links compute ``L x (N1 + N2 - L)`` cosines, where ranking each protocol on its
own (:func:`~mmea_lightning.eval.ranking.rank_targets`) computes ``L x (N1 + N2) + 6 L x L``; each score is compared
once per protocol that uses it, against both rank thresholds at once. The ranks are those of ``rank_targets`` (same
tie tolerance, same CSLS radii and arithmetic, identical vectors scoring identically wherever they are candidates);
``tests/test_eval_shared.py`` checks it protocol by protocol. Links that are not one-to-one are ranked direction by
direction, each direction's protocols sharing its blocks.

Memory: ``S`` (``L x L`` float32: 420 MiB at ``L = 10,500``) is kept when a CSLS or right-to-left protocol needs it,
up to ``max_stored_bytes`` (above that each direction is ranked on its own and CSLS recomputes its blocks), plus
working blocks of ``BLOCK_ELEMENTS`` scores (and twice that of comparison flags). See ``docs/evaluation.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from mmea_lightning.similarity import row_chunks

from .ranking import TIE_TOLERANCE, RankResult, check_ranking_options

__all__ = ["BLOCK_ELEMENTS", "MAX_STORED_BYTES", "PROTOCOL_SPECS", "ProtocolSpec", "protocol_ranks"]


@dataclass(frozen=True)
class ProtocolSpec:
    """What a protocol ranks: ``r2l`` queries the links' kg2 entities; ``whole_graph`` ranks against every entity
    of the other graph (else the linked ones); ``csls`` re-scores with CSLS."""

    r2l: bool
    whole_graph: bool
    csls: bool


PROTOCOL_SPECS: dict[str, ProtocolSpec] = {
    "standard": ProtocolSpec(r2l=False, whole_graph=False, csls=False),
    "r2l": ProtocolSpec(r2l=True, whole_graph=False, csls=False),
    "all": ProtocolSpec(r2l=False, whole_graph=True, csls=False),
    "all_r2l": ProtocolSpec(r2l=True, whole_graph=True, csls=False),
    "csls": ProtocolSpec(r2l=False, whole_graph=False, csls=True),
    "csls_r2l": ProtocolSpec(r2l=True, whole_graph=False, csls=True),
}
#: the standard block is kept in memory up to this many bytes (2 GiB: ``L`` up to ~23k one-to-one links)
MAX_STORED_BYTES = 2 * 1024**3
#: scores per working block (rows x candidates): 64 MB of float32 (and twice that of comparison flags). Large blocks
#: mean few tensor operations (each a parallel region: costly when the cores are shared with other jobs); with
#: blocks of a few MB instead (in cache) one thread was no faster on this machine.
BLOCK_ELEMENTS = 1 << 24
#: counts summed in float32 are exact below this many candidates
_EXACT_FLOAT32_COUNT = 1 << 24
#: top-k by groups: the maxima of groups of this many scores first, then the scores of the best groups
_GROUP = 64


def _copies(x: Tensor) -> tuple[Tensor, Tensor] | None:
    """The rows of ``x (n, d)`` float32 equal to an earlier row and, for each, the first row equal to it (``(c,)``
    long each, by row); ``None`` when all rows are distinct.

    An integer hash of every row's bits (``-0.0`` read as ``0.0``: equal as ``torch.unique`` compares) screens in
    ``O(n d)``; only rows whose hashes collide are compared (:func:`torch.unique` on those rows)."""
    if x.size(0) < 2:
        return None
    bits = (x.contiguous() + 0.0).view(torch.int32).to(torch.int64)
    weights = torch.randint(1, 1 << 16, (x.size(1),), generator=torch.Generator().manual_seed(0))
    hashes = (bits * weights.to(x.device)).sum(dim=1)  # |bits * w| < 2^47: no overflow
    _, hash_inverse, hash_counts = torch.unique(hashes, return_inverse=True, return_counts=True)
    suspects = (hash_counts[hash_inverse] > 1).nonzero()[:, 0]  # by row
    if suspects.numel() == 0:
        return None
    _, inverse = torch.unique(x[suspects], dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), suspects.numel(), device=x.device)
    first = first.scatter_reduce(0, inverse, torch.arange(suspects.numel(), device=x.device), "amin")
    originals = suspects[first[inverse]]
    copy = originals != suspects
    if not bool(copy.any()):
        return None
    return suspects[copy], originals[copy]


class _Candidates:
    """One direction's candidates: the linked ones (``U``), then (for the whole-graph protocol) the rest (``R``).

    A candidate vector equal to an earlier one gets that one's scores, copied after the matrix product, so identical
    candidates tie exactly (a matrix product does not promise bitwise-equal dot products for equal columns)."""

    def __init__(self, linked: Tensor, rest: Tensor | None):
        self.linked = linked
        self.rest = rest if rest is not None and rest.size(0) else None
        self.num_linked = linked.size(0)
        self.num = self.num_linked + (0 if self.rest is None else self.rest.size(0))
        copies = _copies(linked if self.rest is None else torch.cat([linked, self.rest]))
        if copies is None:
            self.linked_copies = self.rest_copies = None
        else:  # the first copy of a vector comes first: a linked copy's original is linked too
            in_rest = copies[0] >= self.num_linked
            self.linked_copies = (copies[0][~in_rest], copies[1][~in_rest])
            self.rest_copies = (copies[0][in_rest] - self.num_linked, copies[1][in_rest])

    def scores(self, queries: Tensor, linked_out: Tensor, rest_out: Tensor | None,
               before_rest: Callable[[Tensor], None] | None = None) -> tuple[Tensor, Tensor | None]:
        """Cosines of ``queries (b, d)`` with the linked candidates ``(b, U)`` and with the rest ``(b, R)`` (``None``
        without a rest), written into the given tensors; ``before_rest(linked)`` may change the linked scores
        before the rest's copies of linked candidates are taken from them."""
        linked = torch.mm(queries, self.linked.t(), out=linked_out)
        rest = None if self.rest is None else torch.mm(queries, self.rest.t(), out=rest_out)
        if self.linked_copies is not None and self.linked_copies[0].numel():
            linked[:, self.linked_copies[0]] = linked[:, self.linked_copies[1]]
        if before_rest is not None:
            before_rest(linked)
        if rest is not None and self.rest_copies is not None and self.rest_copies[0].numel():
            copies, originals = self.rest_copies
            from_linked = originals < self.num_linked
            rest[:, copies[from_linked]] = linked[:, originals[from_linked]]
            rest[:, copies[~from_linked]] = rest[:, originals[~from_linked] - self.num_linked]
        return linked, rest


def _thresholds(true: Tensor, tol: float) -> Tensor:
    """``(..., 2)`` for true scores ``(...)``: a score above ``[..., 0]`` beats the true score beyond the tolerance
    (``> true + tol``); a score above ``[..., 1]`` ties with it or beats it (``>= true - tol``, i.e. above the float
    just below ``true - tol``). One comparison against both gives both ranks."""
    low = true - tol
    return torch.stack([true + tol, torch.nextafter(low, low.new_tensor(-math.inf))], dim=-1)


def _above(scores: Tensor, thresholds: Tensor, out: Tensor) -> Tensor:
    """``(n, 2, C)`` 0/1 flags ``scores[i, None, j] > thresholds``, for ``thresholds`` ``(n, 2, 1)`` (a pair per
    row) or ``(1, 2, C)`` (a pair per column); summed over the candidates they are the rank counts."""
    return torch.gt(scores[:, None, :], thresholds, out=out)


def _flags(rows: int, cols: int, summed: int, device: torch.device) -> Tensor:
    """``(rows, 2, cols)`` scratch for comparison flags: float32 sums of 0/1 are exact below 2^24 terms (and
    faster than integer sums), else float64."""
    dtype = torch.float32 if summed < _EXACT_FLOAT32_COUNT else torch.float64
    return torch.empty(rows, 2, cols, dtype=dtype, device=device)


class _Counts:
    """Per query, the number of scores that beat the true score and the number that tie with it or beat it: the
    optimistic rank minus one and the pessimistic rank (:class:`RankResult`)."""

    def __init__(self, num_queries: int, device: torch.device):
        self.counts = torch.zeros(num_queries, 2, dtype=torch.float64, device=device)

    def ranks(self, num_candidates: int) -> RankResult:
        return RankResult(1 + self.counts[:, 0], self.counts[:, 1].clone(), num_candidates)


def _row_topk(x: Tensor, k: int) -> Tensor:
    """``(n, k)`` the ``k`` largest values of every row of ``x (n, C)``, descending: ``x.topk(k).values``, faster.

    The row is cut in groups of ``_GROUP`` columns; the ``k`` groups with the largest maxima hold the ``k`` largest
    values (any other value is at most the smallest of those ``k`` maxima), so only they are ranked."""
    num_rows, num_cols = x.shape
    if num_cols <= 4 * _GROUP * k:
        return x.topk(k, dim=1).values
    full = num_cols // _GROUP
    maxima = x[:, : full * _GROUP].unflatten(1, (full, _GROUP)).amax(dim=2)
    if num_cols > full * _GROUP:
        maxima = torch.cat([maxima, x[:, full * _GROUP :].amax(dim=1, keepdim=True)], dim=1)
    cols = maxima.topk(k, dim=1).indices[:, :, None] * _GROUP + torch.arange(_GROUP, device=x.device)
    valid = cols < num_cols
    values = x.gather(1, cols.clamp_max(num_cols - 1).flatten(1)).masked_fill(~valid.flatten(1), -math.inf)
    return values.topk(k, dim=1).values


class _TopK:
    """The ``k`` largest scores of every row and every column of a matrix given in row blocks (the CSLS radii).

    Column top-k: with the whole matrix kept (``stored``), from the maxima of groups of ``_GROUP`` rows (as
    :func:`_row_topk`, down the columns); else by a running top-k merged with every block."""

    def __init__(self, num_rows: int, num_cols: int, k_row: int, k_col: int, stored: Tensor | None):
        self.k_row, self.k_col, self.stored = k_row, k_col, stored
        self.rows = torch.empty(num_rows, k_row, device=stored.device if stored is not None else None)
        self.group_maxima: list[Tensor] = []
        self.group_starts: list[int] = []
        self.group_sizes: list[int] = []
        self.cols: Tensor | None = None  # (num_cols, <= k_col) running top-k, without ``stored``

    def add(self, rows: slice, block: Tensor) -> None:
        self.rows[rows] = _row_topk(block, self.k_row)
        if self.stored is None:
            pool = block.t() if self.cols is None else torch.cat([self.cols, block.t()], dim=1)
            self.cols = pool.topk(min(self.k_col, pool.size(1)), dim=1).values
            return
        num = rows.stop - rows.start
        full = num // _GROUP
        if full:
            self.group_maxima.append(block[: full * _GROUP].unflatten(0, (full, _GROUP)).amax(dim=1))
            self.group_starts.extend(range(rows.start, rows.start + full * _GROUP, _GROUP))
            self.group_sizes.extend([_GROUP] * full)
        if num > full * _GROUP:
            self.group_maxima.append(block[full * _GROUP :].amax(dim=0, keepdim=True))
            self.group_starts.append(rows.start + full * _GROUP)
            self.group_sizes.append(num - full * _GROUP)

    def _col_topk(self) -> Tensor:
        """``(num_cols, k_col)`` descending."""
        if self.stored is None:
            return self.cols
        maxima = torch.cat(self.group_maxima)  # (groups, num_cols)
        device = maxima.device
        groups = maxima.topk(min(self.k_col, maxima.size(0)), dim=0).indices.t()  # (num_cols, kg)
        starts = torch.tensor(self.group_starts, device=device)[groups]
        sizes = torch.tensor(self.group_sizes, device=device)[groups]
        offsets = torch.arange(_GROUP, device=device)
        valid = (offsets < sizes[:, :, None]).flatten(1)  # (num_cols, kg * _GROUP)
        rows = (starts[:, :, None] + offsets).flatten(1).masked_fill(~valid, 0)
        cols = torch.arange(maxima.size(1), device=device)[:, None]
        values = self.stored[rows, cols].masked_fill(~valid, -math.inf)
        return values.topk(self.k_col, dim=1).values

    # ``rank_targets`` averages a query's top-k as a (Q, k) tensor over dim 1 and a candidate's as a (k, C) tensor
    # over dim 0; the radii here are averaged the same way, so they are the same floats.
    def radii(self) -> tuple[Tensor, Tensor]:
        """Radii of the rows as queries and of the columns as candidates."""
        return self.rows.mean(dim=1), self._col_topk().t().contiguous().mean(dim=0)

    def transposed_radii(self) -> tuple[Tensor, Tensor]:
        """Radii of the transposed matrix: the columns as queries, the rows as candidates."""
        return self._col_topk().contiguous().mean(dim=1), self.rows.t().contiguous().mean(dim=0)


def _block_rows(num_candidates: int, chunk_size: int) -> int:
    return max(1, min(chunk_size, BLOCK_ELEMENTS // max(num_candidates, 1)))


def _csls(block: Tensor, row_radii: Tensor, col_radii: Tensor, out: Tensor) -> Tensor:
    """CSLS scores ``2 * block - row_radii - col_radii`` (``(n, 1)`` and ``(1, C)``; or ``(1, C)`` and ``(n, 1)``
    for a transposed block) with ``rank_targets``' rounding: ``(2 s - r_row) - r_col``, ``2 s`` being exact."""
    return torch.add(-row_radii, block, alpha=2, out=out).sub_(col_radii)


@dataclass
class _Direction:
    """One ranking direction: ``queries (Q, d)`` against ``linked (U, d)`` candidates (``targets (Q,)`` index into
    them) and, for the whole-graph protocol, ``rest (R, d)``: the graph's entities outside the links."""

    queries: Tensor
    linked: Tensor
    rest: Tensor | None
    targets: Tensor


def _rank_direction(direction: _Direction, *, linked: bool, whole: bool, csls_k: int, tol: float, chunk_size: int,
                    max_stored_bytes: int) -> dict[str, RankResult]:
    """Ranks of one direction's protocols (``linked``: against the linked candidates; ``whole``: against the
    whole graph; ``csls_k > 0``: CSLS against the linked candidates) from one pass of score blocks (two with CSLS,
    the second reading the kept standard block or recomputing it)."""
    queries, targets = direction.queries, direction.targets
    device, num_q = queries.device, queries.size(0)
    candidates = _Candidates(direction.linked, direction.rest if whole else None)
    num_u, num_c = candidates.num_linked, candidates.num
    block = _block_rows(num_c, chunk_size)
    num_r = num_c - num_u
    linked_buf, flags = torch.empty(block, num_u, device=device), _flags(block, max(num_u, num_r), num_c, device)
    rest_buf = None if candidates.rest is None else torch.empty(block, num_r, device=device)
    plain, every = _Counts(num_q, device), _Counts(num_q, device)
    stored = (torch.empty(num_q, num_u, device=device)
              if csls_k > 0 and num_q * num_u * 4 <= max_stored_bytes else None)
    top = _TopK(num_q, num_u, min(csls_k, num_u), min(csls_k, num_q), stored) if csls_k > 0 else None
    for rows in row_chunks(num_q, block):
        n = rows.stop - rows.start
        std, rest = candidates.scores(queries[rows], linked_buf[:n] if stored is None else stored[rows],
                                      None if rest_buf is None else rest_buf[:n])
        if linked or whole:
            thresholds = _thresholds(std.gather(1, targets[rows, None])[:, 0], tol)[:, :, None]
            counts = _above(std, thresholds, flags[:n, :, :num_u]).sum(2)
            plain.counts[rows] += counts
            if whole:
                every.counts[rows] += counts
                if rest is not None:
                    every.counts[rows] += _above(rest, thresholds, flags[:n, :, :num_r]).sum(2)
        if top is not None:
            top.add(rows, std)
    out = {}
    if linked:
        out["linked"] = plain.ranks(num_u)
    if whole:
        out["whole"] = every.ranks(num_c)
    if top is not None:
        row_radii, col_radii = top.radii()
        csls = _Counts(num_q, device)
        work = torch.empty(block, num_u, device=device)
        for rows in row_chunks(num_q, block):
            n = rows.stop - rows.start
            std = stored[rows] if stored is not None else candidates.scores(queries[rows], linked_buf[:n], None)[0]
            scores = _csls(std, row_radii[rows, None], col_radii[None, :], work[:n])
            thresholds = _thresholds(scores.gather(1, targets[rows, None])[:, 0], 4 * tol)[:, :, None]
            csls.counts[rows] += _above(scores, thresholds, flags[:n, :, :num_u]).sum(2)
        out["csls"] = csls.ranks(num_u)
    return out


def _copy_rows(block: Tensor, *, stored: Tensor, rows: slice, copies: tuple[Tensor, Tensor]) -> None:
    """Rows of ``block`` (rows ``rows`` of ``stored``) whose vector equals an earlier row's take that row's scores
    (from ``stored``: an original comes first, so it is in an earlier block or in this one)."""
    here = (copies[0] >= rows.start) & (copies[0] < rows.stop)
    if bool(here.any()):
        block[copies[0][here] - rows.start] = stored[copies[1][here]]


def _attach_rest(left: Tensor, rest: Tensor) -> tuple[Tensor, Tensor]:
    """kg1 entities outside the links whose vector equals a linked kg1 vector score as that link's row of ``S`` does:
    they are counted with that row (its weight) instead of in the rest block, which a different matrix product
    scores. Returns the rest left to score and the ``(L,)`` float32 weight of every row of ``S`` for ``all_r2l``."""
    weights = torch.ones(left.size(0), device=left.device)
    copies = _copies(torch.cat([left, rest])) if rest.size(0) else None
    if copies is None:
        return rest, weights
    attached = (copies[0] >= left.size(0)) & (copies[1] < left.size(0))  # a rest row whose first twin is linked
    weights.index_add_(0, copies[1][attached], torch.ones(int(attached.sum()), device=left.device))
    keep = torch.ones(rest.size(0), dtype=torch.bool, device=rest.device)
    keep[copies[0][attached] - left.size(0)] = False
    return rest[keep], weights


def _rank_both_ways(left: Tensor, right: Tensor, kg2_rest: Tensor | None, kg1_rest: Tensor | None, *,
                    want: dict[str, bool], csls_k: int, tol: float, chunk_size: int) -> dict[str, RankResult]:
    """Both directions of one-to-one links from the left-to-right standard block ``S (L, L)`` (``S[i, j]``: link
    ``i``'s kg1 vector with link ``j``'s kg2 vector, the true scores on the diagonal; ``left`` / ``right`` ``(L, d)``
    in link order): ``r2l`` and ``csls_r2l`` are counted down the columns of ``S`` (the right-to-left block is
    ``S.T``); ``all`` adds ``left x kg2_rest``, ``all_r2l`` adds ``right x kg1_rest``. Identical vectors score
    identically wherever they are candidates (row copies in ``S``, :func:`_attach_rest`, :class:`_Candidates`)."""
    device, num = left.device, left.size(0)
    # rows of S are r2l candidates: a linked kg1 vector equal to an earlier one gets that one's row of S
    row_copies = _copies(left)
    candidates = _Candidates(right, kg2_rest if want["all"] else None)
    num_c = candidates.num
    num_r = num_c - num
    block = _block_rows(num_c, chunk_size)
    flags = _flags(block, max(num, num_r), max(num_c, block), device)
    rest_buf = None if candidates.rest is None else torch.empty(block, num_r, device=device)
    stored = torch.empty(num, num, device=device)
    top = _TopK(num, num, min(csls_k, num), min(csls_k, num), stored) if want["csls"] or want["csls_r2l"] else None
    diagonal = torch.empty(num, device=device)
    standard, every = _Counts(num, device), _Counts(num, device)
    # pass 1, the l2r blocks: standard and all along the rows; S kept, with its row and column top-k
    for rows in row_chunks(num, block):
        n = rows.stop - rows.start
        copy_rows = None if row_copies is None else partial(_copy_rows, stored=stored, rows=rows, copies=row_copies)
        std, rest = candidates.scores(left[rows], stored[rows], None if rest_buf is None else rest_buf[:n],
                                      before_rest=copy_rows)
        diagonal[rows] = std.diagonal(offset=rows.start)
        if want["standard"] or want["all"]:
            thresholds = _thresholds(diagonal[rows], tol)[:, :, None]
            standard.counts[rows] += _above(std, thresholds, flags[:n, :, :num]).sum(2)
            if rest is not None:
                every.counts[rows] += _above(rest, thresholds, flags[:n, :, :num_r]).sum(2)
        if top is not None:
            top.add(rows, std)
    del rest_buf
    every.counts += standard.counts
    out = {"standard": standard.ranks(num), "all": every.ranks(num_c)}
    # pass 2, one read of S: r2l and csls_r2l down its columns, csls along its rows
    rest_to_score, weights = (kg1_rest, None) if kg1_rest is None else _attach_rest(left, kg1_rest)
    weighted = weights is not None and bool((weights != 1).any())
    r2l, r2l_all = _Counts(num, device), _Counts(num, device)
    csls, csls_r2l = _Counts(num, device), _Counts(num, device)
    # (1, 2, L), contiguous (strided thresholds halve the comparison's speed): r2l query j's true score is S[j, j]
    r2l_thresholds = _thresholds(diagonal, tol).t().contiguous()[None]
    if top is not None:
        l2r_radii, r2l_radii = top.radii(), top.transposed_radii()
        # the true CSLS scores (the diagonal's), with the same elementwise arithmetic as inside the blocks
        l2r_true = _csls(diagonal, l2r_radii[0], l2r_radii[1], torch.empty_like(diagonal))
        r2l_true = _csls(diagonal, r2l_radii[0], r2l_radii[1], torch.empty_like(diagonal))
        r2l_csls_thresholds = _thresholds(r2l_true, 4 * tol).t().contiguous()[None]
        work = torch.empty(block, num, device=device)
    flags = flags[:, :, :num]
    for rows in row_chunks(num, block):
        n = rows.stop - rows.start
        std = stored[rows]
        if want["r2l"] or want["all_r2l"]:
            above = _above(std, r2l_thresholds, flags[:n])
            r2l.counts += above.sum(0).t()
            if weighted:  # the rows' twins outside the links count as often as they are there
                r2l_all.counts += (weights[rows] @ above.view(n, 2 * num)).view(2, num).t()
        if want["csls"]:
            scores = _csls(std, l2r_radii[0][rows, None], l2r_radii[1][None, :], work[:n])
            thresholds = _thresholds(l2r_true[rows], 4 * tol)[:, :, None]
            csls.counts[rows] += _above(scores, thresholds, flags[:n]).sum(2)
        if want["csls_r2l"]:  # S.T's CSLS scores, transposed: (2 S[i, j] - r2l_row[j]) - r2l_col[i]
            scores = _csls(std, r2l_radii[0][None, :], r2l_radii[1][rows, None], work[:n])
            csls_r2l.counts += _above(scores, r2l_csls_thresholds, flags[:n]).sum(0).t()
    del stored, flags
    work = None
    out.update({"r2l": r2l.ranks(num), "csls": csls.ranks(num), "csls_r2l": csls_r2l.ranks(num)})
    if want["all_r2l"]:
        # pass 3: the links' kg2 vectors against the kg1 entities outside the links
        if not weighted:
            r2l_all.counts += r2l.counts
        total = num + (0 if kg1_rest is None else kg1_rest.size(0))
        if rest_to_score is not None and rest_to_score.size(0):
            rest = _Candidates(rest_to_score, None)
            block = _block_rows(rest.num, chunk_size)
            scores_buf, flags = torch.empty(block, rest.num, device=device), _flags(block, rest.num, rest.num, device)
            thresholds = r2l_thresholds[0].t()  # (L, 2)
            for rows in row_chunks(num, block):
                n = rows.stop - rows.start
                scores, _ = rest.scores(right[rows], scores_buf[:n], None)
                r2l_all.counts[rows] += _above(scores, thresholds[rows, :, None], flags[:n]).sum(2)
        out["all_r2l"] = r2l_all.ranks(total)
    return {name: ranks for name, ranks in out.items() if want[name]}


def _normalized(embeddings: Tensor, ids: Tensor) -> Tensor:
    """L2-normalised float32 rows ``embeddings[ids]`` (as ``rank_targets`` normalises its inputs); non-finite
    rows are refused as ``rank_targets`` refuses them."""
    rows = embeddings[ids]
    if rows.is_floating_point() and not bool(torch.isfinite(rows).all()):
        raise ValueError("embeddings contains NaN or infinite values (diverged model?)")
    return F.normalize(rows.to(torch.float32), dim=1)


def _outside(graph_ids: Tensor, linked: Tensor) -> Tensor:
    """The ids of ``graph_ids`` not in ``linked``, in ``graph_ids`` order."""
    return graph_ids[~torch.isin(graph_ids, linked)]


@torch.no_grad()
def protocol_ranks(
    embeddings: Tensor,
    links: Tensor,
    kg1_ids: Tensor,
    kg2_ids: Tensor,
    protocols: Collection[str],
    *,
    csls_k: int = 3,
    chunk_size: int = 4096,
    tie_tolerance: float = TIE_TOLERANCE,
    max_stored_bytes: int = MAX_STORED_BYTES,
) -> dict[str, RankResult]:
    """The ranks of the gold counterparts under several protocols, from shared similarity blocks.

    Args:
        embeddings: ``(N, d)`` embeddings of every entity, indexed by global id.
        links: ``(L, 2)`` long gold pairs ``(kg1_id, kg2_id)``, every id a row of ``embeddings`` and present in
            ``kg1_ids`` resp. ``kg2_ids`` (:func:`~mmea_lightning.eval.evaluator.evaluate_alignment` checks).
        kg1_ids / kg2_ids: ``(N1,)`` / ``(N2,)`` long, distinct ids of the two graphs.
        protocols: names from :data:`PROTOCOL_SPECS`.
        csls_k: CSLS neighbourhood size; chunk_size: at most this many queries per block.
        tie_tolerance: as :func:`~mmea_lightning.eval.ranking.rank_targets` (``4x`` for CSLS scores).
        max_stored_bytes: keep the standard block in memory up to this size (see the module docstring).

    Returns:
        ``{protocol: RankResult}`` with ``(L,)`` ranks in link order: the ranks ``rank_targets`` gives each protocol
        on its own (candidates of the linked protocols: the distinct linked entities).
    """
    if isinstance(protocols, str):
        protocols = (protocols,)
    unknown = [p for p in protocols if p not in PROTOCOL_SPECS]
    if unknown:
        raise ValueError(f"unknown evaluation protocol(s) {unknown}; valid protocols are {list(PROTOCOL_SPECS)}")
    if embeddings.dtype.is_complex or embeddings.dtype == torch.bool:
        raise ValueError(f"embeddings must be a real-valued tensor, got dtype {embeddings.dtype}")
    check_ranking_options(csls_k, chunk_size, tie_tolerance)
    if csls_k == 0 and any(PROTOCOL_SPECS[name].csls for name in protocols):
        # CSLS with no neighbours is the plain cosine (rank_targets' csls_k=0)
        plain = {"csls": "standard", "csls_r2l": "r2l"}
        ranks = protocol_ranks(embeddings, links, kg1_ids, kg2_ids, {plain.get(name, name) for name in protocols},
                               chunk_size=chunk_size, tie_tolerance=tie_tolerance, max_stored_bytes=max_stored_bytes)
        return {name: ranks[plain.get(name, name)] for name in protocols}
    want = {name: name in protocols for name in PROTOCOL_SPECS}
    tol = float(tie_tolerance)
    left, right = links[:, 0], links[:, 1]
    num_links = links.size(0)
    one_to_one = bool(torch.unique(left).numel() == num_links and torch.unique(right).numel() == num_links)
    common = {"tol": tol, "chunk_size": chunk_size}
    l2r_wanted = want["standard"] or want["all"] or want["csls"]
    r2l_wanted = want["r2l"] or want["all_r2l"] or want["csls_r2l"]

    if one_to_one and l2r_wanted and r2l_wanted and num_links * num_links * 4 <= max_stored_bytes:
        # the links' own order indexes both sides: the target of link i is candidate i, in both directions
        left_vectors, right_vectors = _normalized(embeddings, left), _normalized(embeddings, right)
        kg1_rest = _normalized(embeddings, _outside(kg1_ids, left)) if want["all_r2l"] else None
        kg2_rest = _normalized(embeddings, _outside(kg2_ids, right)) if want["all"] else None
        ranks = _rank_both_ways(left_vectors, right_vectors, kg2_rest, kg1_rest, want=want, csls_k=csls_k, **common)
        return {name: ranks[name] for name in protocols}

    out: dict[str, RankResult] = {}
    for r2l in (False, True):
        names = {"linked": "r2l" if r2l else "standard", "whole": "all_r2l" if r2l else "all",
                 "csls": "csls_r2l" if r2l else "csls"}
        if not any(want[name] for name in names.values()):
            continue
        query_ids, linked_ids, graph_ids = (right, left, kg1_ids) if r2l else (left, right, kg2_ids)
        linked_unique, targets = torch.unique(linked_ids, return_inverse=True)
        rest = _normalized(embeddings, _outside(graph_ids, linked_unique)) if want[names["whole"]] else None
        direction = _Direction(_normalized(embeddings, query_ids), _normalized(embeddings, linked_unique), rest,
                               targets)
        ranks = _rank_direction(direction, linked=want[names["linked"]], whole=want[names["whole"]],
                                csls_k=csls_k if want[names["csls"]] else 0, max_stored_bytes=max_stored_bytes,
                                **common)
        out.update({names[key]: value for key, value in ranks.items()})
    return {name: out[name] for name in protocols}
