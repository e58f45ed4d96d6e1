"""Tests of the ICL / IAL losses, uncertainty weighting and one-to-one decoding (small and fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmea_lightning.eval import decoding
from mmea_lightning.eval.decoding import (
    greedy_one_to_one,
    hungarian_one_to_one,
    one_to_one_metrics,
    similarity_matrix,
)
from mmea_lightning.models.losses.ial import IALLoss
from mmea_lightning.models.losses.icl import ICLLoss
from mmea_lightning.models.losses.weighting import UncertaintyWeighting

LARGE_NUM = 1e9


def _data(seed: int = 0, n: int = 20, d: int = 6, b: int = 8):
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, d, generator=gen)
    perm = torch.randperm(n, generator=gen)
    links = torch.stack([perm[:b], perm[b : 2 * b]], dim=1)
    return emb, links


def _soft_xent(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=1)).sum() / logits.shape[0]


def _reference_icl(emb, links, t, alpha, emb2=None):
    """Public MCLEA ``icl_loss``: one-hot labels of width 2B and ``LARGE_NUM`` masks."""
    emb2 = emb if emb2 is None else emb2
    zis = F.normalize(emb, dim=1)[links[:, 0]]
    zjs = F.normalize(emb2, dim=1)[links[:, 1]]
    b = zis.shape[0]
    labels = F.one_hot(torch.arange(b), num_classes=2 * b).float()
    masks = F.one_hot(torch.arange(b), num_classes=b).float()
    logits_aa = zis @ zis.T / t - masks * LARGE_NUM
    logits_bb = zjs @ zjs.T / t - masks * LARGE_NUM
    logits_ab = zis @ zjs.T / t
    logits_ba = zjs @ zis.T / t
    loss_a = _soft_xent(labels, torch.cat([logits_ab, logits_aa], dim=1))
    loss_b = _soft_xent(labels, torch.cat([logits_ba, logits_bb], dim=1))
    return alpha * loss_a + (1 - alpha) * loss_b


def _reference_ial(src, tar, links, t, alpha, zoom):
    """Public MCLEA ``ial_loss``."""
    src, tar = F.normalize(src, dim=1), F.normalize(tar, dim=1)
    si, sj, ti, tj = src[links[:, 0]], src[links[:, 1]], tar[links[:, 0]], tar[links[:, 1]]
    masks = F.one_hot(torch.arange(si.shape[0]), num_classes=si.shape[0]).float()
    p_ab, p_ba, q_ab, q_ba = si @ sj.T / t, sj @ si.T / t, ti @ tj.T / t, tj @ ti.T / t
    p_aa, p_bb = si @ si.T / t - masks * LARGE_NUM, sj @ sj.T / t - masks * LARGE_NUM
    q_aa, q_bb = ti @ ti.T / t - masks * LARGE_NUM, tj @ tj.T / t - masks * LARGE_NUM
    p_a, p_b = torch.cat([p_ab, p_aa], 1), torch.cat([p_ba, p_bb], 1)
    q_a, q_b = torch.cat([q_ab, q_aa], 1), torch.cat([q_ba, q_bb], 1)
    loss_a = F.kl_div(F.log_softmax(p_a, 1), F.softmax(q_a.detach(), 1), reduction="none").mean()
    loss_b = F.kl_div(F.log_softmax(p_b, 1), F.softmax(q_b.detach(), 1), reduction="none").mean()
    return zoom * (alpha * loss_a + (1 - alpha) * loss_b)


# ----------------------------------------------------------------------------------------------- ICL


@pytest.mark.parametrize("t,alpha,second", [(0.1, 0.5, False), (0.5, 0.3, True), (0.05, 1.0, True)])
def test_icl_matches_reference(t, alpha, second):
    emb, links = _data(1)
    emb2 = torch.randn_like(emb) if second else None
    got = ICLLoss(temperature=t, ab_weight=alpha)(emb, links, emb2)
    want = _reference_icl(emb, links, t, alpha, emb2)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_icl_chunks_sum():
    emb, links = _data(2, n=30, b=11)
    loss = ICLLoss(chunk_size=4)
    plain = ICLLoss()
    want = sum(plain(emb, links[s : s + 4]) for s in range(0, 11, 4))
    assert torch.allclose(loss(emb, links), want, atol=1e-6)
    assert torch.allclose(ICLLoss(chunk_size=11)(emb, links), plain(emb, links))  # B <= chunk_size: one chunk
    with pytest.raises(ValueError):
        ICLLoss(chunk_size=0)


def test_icl_from_similarities_and_kept_links():
    emb, links = _data(5, n=40, b=12)
    loss_fn = ICLLoss(temperature=0.2, ab_weight=0.3)
    h1, h2 = F.normalize(emb[links[:, 0]], dim=1), F.normalize(emb[links[:, 1]], dim=1)
    blocks = (h1 @ h2.t(), h1 @ h1.t(), h2 @ h2.t())
    torch.testing.assert_close(loss_fn.from_similarities(*blocks), loss_fn(emb, links))
    keep = torch.tensor([True, False, True, True, False, True, True, True, False, True, True, False])
    sims = [block.clone().requires_grad_() for block in blocks]
    masked = loss_fn.from_similarities(*sims, keep=keep)
    torch.testing.assert_close(masked, loss_fn(emb, links[keep]))  # the kept links alone
    masked.backward()
    for block in sims:  # a left-out link is neither a query nor a negative
        assert block.grad[~keep].abs().sum() == 0 and block.grad[:, ~keep].abs().sum() == 0


def test_icl_decreases_when_positives_closer_and_gradients_flow():
    emb, links = _data(3)
    loss_fn = ICLLoss()
    closer = emb.clone()
    closer[links[:, 1]] = 0.3 * emb[links[:, 1]] + 0.7 * emb[links[:, 0]]
    assert loss_fn(closer, links) < loss_fn(emb, links)

    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    loss_fn(e1, links, e2).backward()
    assert e1.grad is not None and e1.grad[links[:, 0]].abs().sum() > 0
    assert e2.grad is not None and e2.grad[links[:, 1]].abs().sum() > 0
    unused = torch.ones(emb.size(0), dtype=torch.bool)
    unused[links.flatten()] = False
    assert e1.grad[unused].abs().sum() == 0


def test_icl_temperature():
    emb, links = _data(4)
    b = links.size(0)
    # a very high temperature flattens the logits: uniform over the 2B - 1 unmasked entries
    assert abs(ICLLoss(temperature=1e5)(emb, links).item() - math.log(2 * b - 1)) < 1e-3
    # identical orthogonal partners: a lower temperature gives a sharper, lower loss
    aligned = torch.zeros(2 * b, 2 * b)
    aligned[torch.arange(b), torch.arange(b)] = 1
    aligned[torch.arange(b, 2 * b), torch.arange(b)] = 1
    pairs = torch.stack([torch.arange(b), torch.arange(b, 2 * b)], 1)
    low, high = ICLLoss(temperature=0.05)(aligned, pairs), ICLLoss(temperature=1.0)(aligned, pairs)
    assert low < high and low < 1e-6


# ----------------------------------------------------------------------------------------------- IAL


@pytest.mark.parametrize("t,alpha,zoom", [(4.0, 0.5, 0.1), (0.5, 0.2, 1.0)])
def test_ial_matches_reference(t, alpha, zoom):
    emb, links = _data(5)
    joint = torch.randn(emb.size(0), 9, generator=torch.Generator().manual_seed(6))
    got = IALLoss(temperature=t, ab_weight=alpha, zoom=zoom)(emb, joint, links)
    want = _reference_ial(emb, joint, links, t, alpha, zoom)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    chunked = IALLoss(temperature=t, ab_weight=alpha, zoom=zoom, chunk_size=3)(emb, joint, links)
    parts = sum(_reference_ial(emb, joint, links[s : s + 3], t, alpha, zoom) for s in range(0, 8, 3))
    assert torch.allclose(chunked, parts, rtol=1e-5, atol=1e-7)


def test_ial_detached_joint_and_zero_on_identical():
    emb, links = _data(7)
    modal = emb.clone().requires_grad_()
    joint = torch.randn_like(emb).requires_grad_()
    IALLoss(temperature=0.5)(modal, joint, links).backward()
    assert joint.grad is None or joint.grad.abs().sum() == 0
    assert modal.grad is not None and modal.grad.abs().sum() > 0
    assert abs(IALLoss(temperature=0.5, zoom=1.0)(emb, emb.clone(), links).item()) < 1e-6


# --------------------------------------------------------------------------------------- weighting


def test_uncertainty_weighting():
    layer = UncertaintyWeighting(3)
    with torch.no_grad():
        layer.log_vars.copy_(torch.tensor([0.5, -1.0, 0.0]))
    losses = [torch.tensor(2.0), torch.tensor(0.5), torch.tensor(1.5)]
    want = sum(math.exp(-s) * v + s for s, v in zip([0.5, -1.0, 0.0], [2.0, 0.5, 1.5]))
    out = layer(losses)
    assert abs(out.item() - want) < 1e-5
    out.backward()
    assert layer.log_vars.grad is not None and layer.log_vars.grad.abs().sum() > 0
    # d/ds (e^-s v + s) = 1 - e^-s v
    assert torch.allclose(layer.log_vars.grad, 1 - torch.exp(-layer.log_vars.detach()) * torch.tensor([2.0, 0.5, 1.5]))
    with pytest.raises(ValueError):
        layer(losses[:2])


# ---------------------------------------------------------------------------------------- decoding


def _reference_greedy(sim: torch.Tensor) -> set[tuple[int, int]]:
    edges = sorted((-float(sim[i, j]), i, j) for i in range(sim.size(0)) for j in range(sim.size(1)))
    rows, cols, out = set(), set(), set()
    for _, i, j in edges:
        if i not in rows and j not in cols:
            rows.add(i), cols.add(j), out.add((i, j))
    return out


def _as_set(pairs: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(r), int(c)) for r, c in pairs.tolist()}


def _is_matching(pairs: torch.Tensor, n_rows: int, n_cols: int) -> bool:
    rows, cols = pairs[:, 0].tolist(), pairs[:, 1].tolist()
    return (len(pairs) == min(n_rows, n_cols) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
            and all(0 <= r < n_rows for r in rows) and all(0 <= c < n_cols for c in cols))


def test_greedy_vs_hungarian_hand_made():
    sim = torch.tensor([[0.9, 0.8, 0.0], [0.85, 0.0, 0.0], [0.0, 0.0, 0.5]])
    greedy, hungarian = greedy_one_to_one(sim), hungarian_one_to_one(sim)
    assert greedy.tolist() == [[0, 0], [1, 1], [2, 2]]
    assert hungarian.tolist() == [[0, 1], [1, 0], [2, 2]]
    assert greedy.dtype == hungarian.dtype == torch.long


@pytest.mark.parametrize("shape", [(7, 7), (5, 9), (9, 4)])
def test_decoders_on_random_matrices(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    for trial in range(4):
        sim = torch.rand(*shape, generator=gen)
        if trial % 2:  # coarse values: many exact ties
            sim = (sim * 3).floor() / 3
        greedy, hungarian = greedy_one_to_one(sim), hungarian_one_to_one(sim)
        assert _is_matching(greedy, *shape) and _is_matching(hungarian, *shape)
        assert _as_set(greedy) == _reference_greedy(sim)
        for k in (1, 2, 50):  # the candidate-list path (with refills) is the same exact greedy
            assert decoding._greedy_candidates(sim, k=k, chunk_size=3).tolist() == greedy.tolist()

        totals = [float(sim[p[:, 0], p[:, 1]].sum()) for p in (hungarian, greedy)]
        assert totals[0] >= totals[1] - 1e-6


def test_greedy_ties_row_then_column():
    sim = torch.zeros(3, 4)
    assert greedy_one_to_one(sim).tolist() == [[0, 0], [1, 1], [2, 2]]
    assert decoding._greedy_candidates(sim, k=1).tolist() == [[0, 0], [1, 1], [2, 2]]
    sim = torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    assert greedy_one_to_one(sim).tolist() == [[0, 1], [2, 0]]
    with_inf = torch.tensor([[-math.inf, 0.0], [0.0, -math.inf]])
    assert greedy_one_to_one(with_inf).tolist() == [[0, 1], [1, 0]]
    assert decoding._greedy_candidates(with_inf, k=1).tolist() == [[0, 1], [1, 0]]


def test_similarity_matrix():
    emb = torch.randn(10, 4, generator=torch.Generator().manual_seed(8))
    left, right = torch.tensor([0, 3, 5]), torch.tensor([1, 2, 9, 4])
    sim = similarity_matrix(emb, left, right, chunk_size=2)
    want = F.normalize(emb[left], dim=1) @ F.normalize(emb[right], dim=1).T
    assert sim.shape == (3, 4) and sim.dtype == torch.float32 and torch.allclose(sim, want, atol=1e-6)


@pytest.mark.parametrize("method", ["greedy", "hungarian"])
def test_one_to_one_metrics(method):
    n = 12
    gen = torch.Generator().manual_seed(9)
    base = torch.randn(n, 5, generator=gen)
    emb = torch.cat([base, base])  # entity i (kg1) and n + i (kg2) are identical, the rest distinct
    links = torch.stack([torch.arange(n), torch.arange(n, 2 * n)], 1)[torch.randperm(n, generator=gen)]
    out = one_to_one_metrics(emb, links, method=method, prefix="x", chunk_size=5)
    assert out == {"x/hits@1": 1.0, "x/precision": 1.0, "x/recall": 1.0, "x/f1": 1.0}
    swapped = emb.clone()
    swapped[[n, n + 1]] = emb[[n + 1, n]]  # kg2 partners of 0 and 1 exchanged
    out = one_to_one_metrics(swapped, links, method=method)
    for key in ("hits@1", "precision", "recall", "f1"):
        assert out[f"test_1to1/{key}"] == pytest.approx((n - 2) / n)


def test_decoding_bad_inputs(monkeypatch):
    emb = torch.randn(6, 3)
    links = torch.tensor([[0, 3], [1, 4], [2, 5]])
    with pytest.raises(ValueError, match="greedy"):
        one_to_one_metrics(emb, links, method="sinkhorn")
    with pytest.raises(ValueError, match="empty"):
        one_to_one_metrics(emb, torch.zeros(0, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        one_to_one_metrics(emb, links[:, :1])
    with pytest.raises(ValueError):
        one_to_one_metrics(emb, links.float())
    with pytest.raises(ValueError):
        one_to_one_metrics(emb, links + 10)
    with pytest.raises(ValueError):
        greedy_one_to_one(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError):
        hungarian_one_to_one(torch.tensor([[0.0, math.inf]]))
    with pytest.raises(ValueError):
        greedy_one_to_one(torch.zeros(3))
    monkeypatch.setattr(decoding, "_MAX_HUNGARIAN", 8)
    with pytest.raises(ValueError, match="greedy"):
        one_to_one_metrics(emb, links, method="hungarian")
    assert one_to_one_metrics(emb, links, method="greedy")["test_1to1/hits@1"] >= 0


def test_greedy_sorted_path_threshold(monkeypatch):
    sim = torch.rand(6, 6, generator=torch.Generator().manual_seed(10))
    want = greedy_one_to_one(sim)
    monkeypatch.setattr(decoding, "_MAX_SORTED", 10)  # force the candidate path through the public function
    assert greedy_one_to_one(sim).tolist() == want.tolist()
    assert np.array_equal(want[:, 0].numpy(), np.arange(6))  # sorted by row
