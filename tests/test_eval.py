"""Tests of the tie-aware chunked ranking and of the alignment evaluation protocols."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmea_lightning.eval import PROTOCOLS, RankResult, evaluate_alignment, rank_metrics, rank_targets


def _dyadic_vectors(gen: torch.Generator, n: int, d: int = 8) -> torch.Tensor:
    """Integer vectors with 1 or 4 entries of +-1, scaled by 1, 2 or 4: all norms are powers of two,
    so normalised entries and dot products are exact in floating point and equal cosines are exact
    ties (there are only a handful of distinct cosine values)."""
    x = torch.zeros(n, d)
    for i in range(n):
        nnz = [1, 4][int(torch.randint(2, (1,), generator=gen))]
        cols = torch.randperm(d, generator=gen)[:nnz]
        x[i, cols] = torch.randint(0, 2, (nnz,), generator=gen).float() * 2 - 1
        x[i] *= 2 ** int(torch.randint(3, (1,), generator=gen))
    return x


def _reference_ranks(q: np.ndarray, c: np.ndarray, t: np.ndarray, tol: float = 0.0):
    """Brute-force loop over queries in float64; scores within ``tol`` of the true one are ties."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    opt, pes = [], []
    for i in range(len(q)):
        scores = [float(qn[i] @ cn[j]) for j in range(len(c))]
        true = scores[t[i]]
        opt.append(1 + sum(s > true + tol for s in scores))
        pes.append(sum(s >= true - tol for s in scores))
    return np.array(opt, dtype=float), np.array(pes, dtype=float)


def _reference_csls_ranks(q: np.ndarray, c: np.ndarray, t: np.ndarray, k: int, tol: float = 1e-5):
    """Dense CSLS with the full (Q, C) matrix in float64."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    sim = qn @ cn.T
    r_c = -np.sort(-sim, axis=1)[:, : min(k, sim.shape[1])].mean(axis=1)
    r_q = -np.sort(-sim, axis=0)[: min(k, sim.shape[0])].mean(axis=0)
    csls = 2 * sim - r_c[:, None] - r_q[None, :]
    true = csls[np.arange(len(q)), t][:, None]
    return 1.0 + (csls > true + tol).sum(axis=1), (csls >= true - tol).sum(axis=1).astype(float)


# --------------------------------------------------------------------------------------- rank_targets


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1000])
def test_rank_targets_matches_brute_force_with_exact_ties(seed: int, chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    queries, candidates = _dyadic_vectors(gen, 17), _dyadic_vectors(gen, 13)
    candidates = torch.cat([candidates, candidates[:5]])  # duplicated candidate rows
    targets = torch.randint(len(candidates), (len(queries),), generator=gen)
    ranks = rank_targets(queries, candidates, targets, chunk_size=chunk_size)
    opt, pes = _reference_ranks(queries.numpy(), candidates.numpy(), targets.numpy())
    assert ranks.optimistic.dtype == torch.float64 and ranks.num_candidates == len(candidates)
    assert (pes > opt).any(), "the example should contain ties"
    np.testing.assert_array_equal(ranks.optimistic.numpy(), opt)
    np.testing.assert_array_equal(ranks.pessimistic.numpy(), pes)
    np.testing.assert_array_equal(ranks.realistic.numpy(), (opt + pes) / 2)


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_rank_targets_matches_brute_force_on_gaussian_with_duplicates(chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(3)
    queries, candidates = torch.randn(20, 6, generator=gen), torch.randn(15, 6, generator=gen)
    candidates = torch.cat([candidates, candidates[[0, 3, 3]]])
    targets = torch.cat([torch.tensor([0, 3, 15, 16]), torch.randint(18, (16,), generator=gen)])
    ranks = rank_targets(queries.double(), candidates, targets, chunk_size=chunk_size)
    opt, pes = _reference_ranks(queries.numpy(), candidates.numpy(), targets.numpy())
    np.testing.assert_array_equal(ranks.optimistic.numpy(), opt)
    np.testing.assert_array_equal(ranks.pessimistic.numpy(), pes)
    # targets 0 / 15 have one identical copy, targets 3 / 16 two
    assert (ranks.pessimistic - ranks.optimistic)[:4].tolist() == [1.0, 2.0, 1.0, 2.0]


def test_identical_candidates_are_ties() -> None:
    candidates = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ranks = rank_targets(torch.tensor([[0.9, 0.1]]), candidates, torch.tensor([1]))
    assert ranks.optimistic.tolist() == [1.0] and ranks.pessimistic.tolist() == [2.0]


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_csls_matches_dense_reference(k: int, chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(10 + k)
    queries, candidates = torch.randn(23, 5, generator=gen), torch.randn(11, 5, generator=gen)
    candidates = torch.cat([candidates, candidates[:2]])
    targets = torch.randint(len(candidates), (len(queries),), generator=gen)
    ranks = rank_targets(queries, candidates, targets, csls_k=k, chunk_size=chunk_size)
    opt, pes = _reference_csls_ranks(queries.numpy(), candidates.numpy(), targets.numpy(), k)
    np.testing.assert_array_equal(ranks.optimistic.numpy(), opt)
    np.testing.assert_array_equal(ranks.pessimistic.numpy(), pes)


def test_csls_k_larger_than_sets_is_clipped() -> None:
    gen = torch.Generator().manual_seed(5)
    queries, candidates = torch.randn(3, 4, generator=gen), torch.randn(4, 4, generator=gen)
    targets = torch.tensor([0, 1, 2])
    ranks = rank_targets(queries, candidates, targets, csls_k=50, chunk_size=2)
    opt, pes = _reference_csls_ranks(queries.numpy(), candidates.numpy(), targets.numpy(), 50)
    np.testing.assert_array_equal(ranks.optimistic.numpy(), opt)
    np.testing.assert_array_equal(ranks.pessimistic.numpy(), pes)


def test_csls_demotes_hub() -> None:
    # candidate 0 is a hub closer to every query (cos 0.577) than its true match (cos 0.5);
    # CSLS penalises the hub and recovers the true matches
    queries = torch.eye(4)[:3]
    candidates = torch.tensor([[1.0, 1.0, 1.0, 0.0]] + [[0.0] * 4] * 3)
    candidates[1:, :3] += 0.5 * torch.eye(3)
    candidates[1:, 3] = 0.75**0.5
    targets = torch.tensor([1, 2, 3])
    assert rank_targets(queries, candidates, targets).realistic.tolist() == [2.0, 2.0, 2.0]
    assert rank_targets(queries, candidates, targets, csls_k=3).realistic.tolist() == [1.0, 1.0, 1.0]


# --------------------------------------------------------------------------------------- rank_metrics


def test_hand_made_metrics() -> None:
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8], [0.8, -0.6]])
    # q0 -> c0: rank 1; q1 -> c1: tied with c2 -> 1.5; q2 -> c3: behind c0 and c4 -> 3
    ranks = rank_targets(queries, candidates, torch.tensor([0, 1, 3]))
    assert ranks.optimistic.tolist() == [1.0, 1.0, 3.0]
    assert ranks.pessimistic.tolist() == [1.0, 2.0, 3.0]
    assert ranks.realistic.tolist() == [1.0, 1.5, 3.0]
    metrics = rank_metrics(ranks, ks=(1, 2, 5))
    assert metrics == pytest.approx(
        {"hits@1": 1 / 3, "hits@2": 2 / 3, "hits@5": 1.0, "mrr": (1 + 1 / 1.5 + 1 / 3) / 3, "mr": 5.5 / 3}
    )
    assert all(type(v) is float for v in metrics.values())
    assert set(rank_metrics(ranks)) == {"hits@1", "hits@5", "hits@10", "mrr", "mr"}


def test_rank_metrics_validates() -> None:
    ranks = RankResult(torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="positive int"):
        rank_metrics(ranks, ks=(0,))
    empty = RankResult(torch.ones(0, dtype=torch.float64), torch.ones(0, dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="zero ranks"):
        rank_metrics(empty)


@pytest.mark.parametrize("fill", [0.0, 0.7])
@pytest.mark.parametrize("csls_k", [0, 3])
def test_collapsed_model_does_not_look_good(fill: float, csls_k: int) -> None:
    num_c = 50
    queries, candidates = torch.full((40, 8), fill), torch.full((num_c, 8), fill)
    ranks = rank_targets(queries, candidates, torch.arange(40), csls_k=csls_k, chunk_size=16)
    assert torch.equal(ranks.realistic, torch.full((40,), (num_c + 1) / 2, dtype=torch.float64))
    metrics = rank_metrics(ranks)
    assert metrics["hits@1"] == 0.0 and metrics["hits@10"] == 0.0
    assert metrics["mr"] == (num_c + 1) / 2


# --------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("queries", "candidates", "targets", "match"),
    [
        (torch.zeros(0, 3), torch.ones(2, 3), torch.zeros(0, dtype=torch.long), "queries is empty"),
        (torch.ones(2, 3), torch.zeros(0, 3), torch.zeros(2, dtype=torch.long), "candidates is empty"),
        (torch.ones(2, 3), torch.ones(2, 4), torch.zeros(2, dtype=torch.long), "same dimension"),
        (torch.ones(3), torch.ones(2, 3), torch.zeros(2, dtype=torch.long), r"shape \(n, d\)"),
        (torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 2]), r"\[0, 2\)"),
        (torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, -1]), r"\[0, 2\)"),
        (torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0]), r"shape \(2,\)"),
        (torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0.0, 1.0]), "integer"),
        (torch.full((2, 3), float("nan")), torch.ones(2, 3), torch.tensor([0, 1]), "NaN"),
    ],
)
def test_rank_targets_validates(queries, candidates, targets, match) -> None:
    with pytest.raises(ValueError, match=match):
        rank_targets(queries, candidates, targets)


def test_rank_targets_validates_options() -> None:
    x, t = torch.ones(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="chunk_size"):
        rank_targets(x, x, t, chunk_size=0)
    with pytest.raises(ValueError, match="csls_k"):
        rank_targets(x, x, t, csls_k=-1)


# --------------------------------------------------------------------------------------- evaluate_alignment


def _toy_pair(seed: int = 0, n_links: int = 12, extra2: int = 6, dim: int = 8):
    """kg1 = ids [0, n_links), kg2 = ids [n_links, 2 n_links + extra2); links (i, n_links + i);
    kg2 counterparts are noisy copies of kg1 embeddings."""
    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n_links, dim, generator=gen)
    x2 = x1 + 0.8 * torch.randn(n_links, dim, generator=gen)
    extra = torch.randn(extra2, dim, generator=gen)
    embeddings = torch.cat([x1, x2, extra])
    kg1_ids = torch.arange(n_links)
    kg2_ids = torch.arange(n_links, 2 * n_links + extra2)
    links = torch.stack([kg1_ids, kg1_ids + n_links], dim=1)
    return embeddings, links, kg1_ids, kg2_ids


def test_evaluate_alignment_keys() -> None:
    embeddings, links, kg1_ids, kg2_ids = _toy_pair()
    results = evaluate_alignment(embeddings, links, kg1_ids, kg2_ids, chunk_size=5)
    metrics = ("hits@1", "hits@5", "hits@10", "mrr", "mr")
    prefixes = ("test", "test_r2l", "test_all", "test_all_r2l", "test_csls", "test_csls_r2l")
    expected = {f"{p}/{m}" for p in prefixes for m in metrics} | {"test/num_queries"}
    assert set(results) == expected
    assert results["test/num_queries"] == float(len(links))
    assert all(type(v) is float for v in results.values())
    only = evaluate_alignment(embeddings, links, kg1_ids, kg2_ids, prefix="valid", protocols="all", ks=(1,))
    assert set(only) == {"valid_all/hits@1", "valid_all/mrr", "valid_all/mr", "valid/num_queries"}


def test_evaluate_alignment_matches_rank_targets() -> None:
    embeddings, links, kg1_ids, kg2_ids = _toy_pair(seed=1)
    results = evaluate_alignment(embeddings, links, kg1_ids, kg2_ids, csls_k=2)
    n = len(links)
    expected = {
        "test": rank_targets(embeddings[:n], embeddings[n : 2 * n], torch.arange(n)),
        "test_r2l": rank_targets(embeddings[n : 2 * n], embeddings[:n], torch.arange(n)),
        "test_all": rank_targets(embeddings[:n], embeddings[kg2_ids], torch.arange(n)),
        "test_csls": rank_targets(embeddings[:n], embeddings[n : 2 * n], torch.arange(n), csls_k=2),
    }
    for key, ranks in expected.items():
        for metric, value in rank_metrics(ranks).items():
            assert results[f"{key}/{metric}"] == pytest.approx(value)


def test_all_protocol_ranks_not_better_than_standard() -> None:
    embeddings, links, kg1_ids, kg2_ids = _toy_pair(seed=2, extra2=30)
    # make the extra kg2 entities strong distractors: near copies of the kg1 queries
    embeddings[24:36] = embeddings[:12] + 0.1 * torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    results = evaluate_alignment(embeddings, links, kg1_ids, kg2_ids, protocols=("standard", "all"))
    for k in (1, 5, 10):
        assert results[f"test_all/hits@{k}"] <= results[f"test/hits@{k}"]
    assert results["test_all/mrr"] < results["test/mrr"]
    assert results["test_all/mr"] > results["test/mr"]
    # per query: a superset of candidates never improves a rank
    n = len(links)
    std = rank_targets(embeddings[:n], embeddings[n : 2 * n], torch.arange(n))
    full = rank_targets(embeddings[:n], embeddings[kg2_ids], torch.arange(n))
    assert (full.optimistic >= std.optimistic).all() and (full.pessimistic >= std.pessimistic).all()


def test_r2l_symmetry() -> None:
    # swapping the two graphs turns l2r into r2l and all into all_r2l
    embeddings, links, kg1_ids, kg2_ids = _toy_pair(seed=3)
    forward = evaluate_alignment(embeddings, links, kg1_ids, kg2_ids)
    backward = evaluate_alignment(embeddings, links.flip(1), kg2_ids, kg1_ids)
    for a, b in [("test", "test_r2l"), ("test_all", "test_all_r2l"), ("test_csls", "test_csls_r2l")]:
        for metric in ("hits@1", "hits@5", "hits@10", "mrr", "mr"):
            assert forward[f"{a}/{metric}"] == pytest.approx(backward[f"{b}/{metric}"])
            assert forward[f"{b}/{metric}"] == pytest.approx(backward[f"{a}/{metric}"])
    # identical embeddings on both sides (with duplicated rows, hence ties): symmetric similarity
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(4))
    x[5:] = x[:5]
    ids = torch.arange(10)
    results = evaluate_alignment(torch.cat([x, x]), torch.stack([ids, ids + 10], 1), ids, ids + 10)
    assert results["test/mr"] == results["test_r2l/mr"] == 1.5
    for metric in ("hits@1", "mrr", "mr"):
        assert results[f"test/{metric}"] == results[f"test_r2l/{metric}"]
        assert results[f"test_csls/{metric}"] == results[f"test_csls_r2l/{metric}"]


def test_duplicate_linked_candidates_are_counted_once() -> None:
    embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.0], [0.0, 1.0]])
    links = torch.tensor([[0, 2], [1, 2]])  # two kg1 entities linked to the same kg2 entity
    results = evaluate_alignment(embeddings, links, torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert results["test/mr"] == 1.0 and results["test_all/mr"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"links": torch.zeros(0, 2, dtype=torch.long)}, "'test' split is empty"),
        ({"protocols": ("standard", "bogus")}, r"unknown evaluation protocol.*bogus.*'csls_r2l'"),
        ({"links": torch.tensor([[0, 12], [13, 14]])}, r"left \(kg1\) entity that is not in kg1_ids.*13"),
        ({"links": torch.tensor([[0, 12], [1, 3]])}, r"right \(kg2\) entity that is not in kg2_ids.*3"),
        ({"links": torch.tensor([[0, 12], [1, 99]])}, r"links must be entity ids in \[0, 30\)"),
        ({"links": torch.tensor([0, 12])}, r"links must have shape \(L, 2\)"),
        ({"embeddings": torch.ones(30)}, r"embeddings must have shape \(N, d\)"),
        ({"kg2_ids": torch.tensor([12, 12, 13])}, "duplicate"),
    ],
)
def test_evaluate_alignment_validates(kwargs, match) -> None:
    embeddings, links, kg1_ids, kg2_ids = _toy_pair()
    args = {"embeddings": embeddings, "links": links, "kg1_ids": kg1_ids, "kg2_ids": kg2_ids} | kwargs
    with pytest.raises(ValueError, match=match):
        evaluate_alignment(**args)


def test_protocols_constant() -> None:
    assert PROTOCOLS == ("standard", "r2l", "all", "all_r2l", "csls", "csls_r2l")


@pytest.mark.parametrize("csls_k", [0, 3])
def test_collapsed_model_ties_whatever_the_scale(csls_k: int) -> None:
    """Issue 27, defect 10: embeddings that are positive multiples of one vector tie (MRR 2 / (C + 1)), instead of
    being ordered by the last bits of their normalised copies (MRR 0.0443 instead of 0.0198 at C = 100)."""
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(64, generator=gen)
    num_q, num_c = 80, 100
    scales = torch.exp(torch.randn(num_q + num_c, generator=gen) * 3)  # scales from ~1e-4 to ~1e4
    embeddings = scales[:, None] * direction[None, :]
    ranks = rank_targets(embeddings[:num_q], embeddings[num_q:], torch.arange(num_q), csls_k=csls_k, chunk_size=16)
    assert torch.equal(ranks.realistic, torch.full((num_q,), (num_c + 1) / 2, dtype=torch.float64))
    assert rank_metrics(ranks)["mrr"] == pytest.approx(2 / (num_c + 1))
    # bit-exact comparison on request: the same inputs then order by rounding noise
    exact = rank_targets(embeddings[:num_q], embeddings[num_q:], torch.arange(num_q), tie_tolerance=0.0)
    assert not torch.equal(exact.realistic, ranks.realistic)


def test_distinct_scores_beyond_the_tolerance_are_not_ties() -> None:
    queries = torch.tensor([[1.0, 0.0]])
    angle = 2e-3  # cosines 1 and cos(2e-3) = 1 - 2e-6: apart by twice the tolerance
    candidates = torch.tensor([[1.0, 0.0], [float(np.cos(angle)), float(np.sin(angle))]])
    ranks = rank_targets(queries, candidates, torch.tensor([1]))
    assert ranks.optimistic.tolist() == [2.0] and ranks.pessimistic.tolist() == [2.0]
