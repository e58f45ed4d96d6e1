"""The shared similarity module: chunked scores, exact top-k, mutual nearest neighbours, the greedy matcher."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmea_lightning.similarity import (
    cosine_similarity,
    greedy_matching,
    greedy_matching_sorted,
    mutual_nearest_neighbours,
    row_chunks,
    similarity_chunks,
    sorted_topk,
    top_k_rows,
)


def reference_greedy(sim: torch.Tensor) -> list[tuple[int, int]]:
    """The sequential greedy by one Python sort: score desc, then row, then column."""
    edges = sorted((-float(sim[i, j]), i, j) for i in range(sim.size(0)) for j in range(sim.size(1)))
    rows, cols, out = set(), set(), []
    for _, i, j in edges:
        if i not in rows and j not in cols:
            rows.add(i), cols.add(j), out.append((i, j))
    return out


def tied_matrix(gen: torch.Generator, shape: tuple[int, int], levels: int, with_inf: bool = False) -> torch.Tensor:
    sim = (torch.rand(*shape, generator=gen) * levels).floor() / levels
    if with_inf:
        sim[sim < 0.3] = -math.inf
    return sim


@pytest.mark.parametrize("shape", [(1, 1), (6, 9), (9, 6), (17, 17), (3, 40)])
@pytest.mark.parametrize("levels", [2, 5, 1000])
def test_both_greedy_paths_take_the_reference_pairs_in_its_order(shape, levels):
    gen = torch.Generator().manual_seed(shape[0] * 100 + shape[1] + levels)
    for trial in range(3):
        sim = tied_matrix(gen, shape, levels, with_inf=trial == 2)
        expected = reference_greedy(sim)
        for k, chunk in ((1, 1), (2, 4), (32, 1024)):  # k=1 forces a refill at nearly every collision
            pairs, scores = greedy_matching(lambda rows, sim=sim: sim[rows], *shape, k=k, chunk_size=chunk)
            assert [tuple(p) for p in pairs.tolist()] == expected  # pick order, ties by row then column
            assert torch.equal(scores, sim[pairs[:, 0], pairs[:, 1]])
        by_row = sorted(expected)
        assert [tuple(p) for p in greedy_matching_sorted(sim).tolist()] == by_row


def test_greedy_limit_and_floor_stop_early():
    sim = torch.tensor([[0.9, 0.8, 0.1], [0.85, 0.2, 0.0], [0.3, 0.7, 0.6]])
    pairs, scores = greedy_matching(lambda rows: sim[rows], 3, 3, limit=2)
    assert pairs.tolist() == [[0, 0], [2, 1]] and scores.tolist() == pytest.approx([0.9, 0.7])
    pairs, _ = greedy_matching(lambda rows: sim[rows], 3, 3, min_score=0.5)
    assert pairs.tolist() == [[0, 0], [2, 1]]  # the third pair, (1, 2), scores 0.0
    with_inf = torch.tensor([[-math.inf]])
    assert greedy_matching(lambda rows: with_inf[rows], 1, 1)[0].tolist() == [[0, 0]]  # no floor: -inf is a pair
    assert greedy_matching(lambda rows: with_inf[rows], 1, 1, min_score=-math.inf)[0].shape == (0, 2)


def test_greedy_refuses_bad_scores():
    with pytest.raises(ValueError, match="NaN"):
        greedy_matching(lambda rows: torch.full((len(rows), 2), math.nan), 2, 2)
    with pytest.raises(ValueError, match="shape"):
        greedy_matching(lambda rows: torch.zeros(len(rows), 3), 2, 2)
    with pytest.raises(ValueError, match="floating"):
        greedy_matching(lambda rows: torch.zeros(len(rows), 2, dtype=torch.long), 2, 2)


def test_sorted_topk_is_exact_across_ties():
    gen = torch.Generator().manual_seed(0)
    values = tied_matrix(gen, (50, 30), 3)
    for k in (1, 4, 30):
        vals, cols = sorted_topk(values, k)
        full_vals, full_cols = torch.sort(values, dim=1, descending=True, stable=True)
        assert torch.equal(vals, full_vals[:, :k]) and torch.equal(cols, full_cols[:, :k])
        chunked = top_k_rows(lambda rows: values[rows], 50, 30, k, chunk_size=7)
        assert torch.equal(chunked[0], vals) and torch.equal(chunked[1], cols)


def test_chunked_cosine_is_the_dense_one_at_every_chunk_size():
    gen = torch.Generator().manual_seed(1)
    queries, candidates = torch.randn(23, 5, generator=gen) * 3, torch.randn(11, 5, generator=gen)
    want = F.normalize(queries, dim=1) @ F.normalize(candidates, dim=1).T
    for chunk in (1, 4, 23, 4096):  # (a 1-row product may round differently from a matrix product)
        sim = cosine_similarity(queries, candidates, chunk_size=chunk)
        assert sim.dtype == torch.float32 and torch.allclose(sim, want, atol=1e-6)
    covered = [rows for rows, _ in similarity_chunks(queries, candidates, 10)]
    assert covered == [slice(0, 10), slice(10, 20), slice(20, 23)] == list(row_chunks(23, 10))


def test_similarity_chunks_refuses_bad_input():
    with pytest.raises(ValueError, match="chunk_size"):
        list(row_chunks(5, 0))
    with pytest.raises(ValueError, match="width"):
        list(similarity_chunks(torch.zeros(2, 3), torch.zeros(2, 4), 1))
    with pytest.raises(ValueError, match="shape"):
        list(similarity_chunks(torch.zeros(3), torch.zeros(2, 3), 1))


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_mutual_nearest_neighbours_is_the_dense_definition(chunk):
    gen = torch.Generator().manual_seed(2)
    for trial in range(4):
        queries = torch.randn(12, 3, generator=gen)
        candidates = torch.randn(9, 3, generator=gen)
        if trial % 2:  # duplicated candidates: ties go to the lowest index
            candidates[5] = candidates[2]
            queries[7] = queries[1]
        sim = F.normalize(queries, dim=1) @ F.normalize(candidates, dim=1).T
        best_col, best_row = sim.argmax(dim=1), sim.argmax(dim=0)
        want = [(i, int(best_col[i])) for i in range(12) if int(best_row[best_col[i]]) == i]
        got = mutual_nearest_neighbours(queries, candidates, chunk_size=chunk)
        assert [tuple(p) for p in got.tolist()] == want
    assert mutual_nearest_neighbours(torch.zeros(0, 3), candidates).shape == (0, 2)
