"""The diagonal-weight multi-head GAT layer / encoder (MCLEA / MEAformer structure encoder)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch_geometric.nn import GATConv
from torch_geometric.utils import scatter

from mmea_lightning.models.encoders.gat import DiagGATConv, GATEncoder


def _random_graph(num_nodes: int, num_edges: int, seed: int = 0) -> torch.Tensor:
    """An undirected random graph as ``(2, E)`` with both directions, no self-loops."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    return torch.cat([ei, ei.flip(0)], dim=1)


def _randomise(conv: DiagGATConv, seed: int = 0) -> DiagGATConv:
    """Non-trivial weights (the init has w = 1, which would hide head / weight mix-ups)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv.weight.copy_(0.5 + torch.rand(conv.weight.shape, generator=g, dtype=conv.weight.dtype))
        conv.att.copy_(torch.randn(conv.att.shape, generator=g, dtype=conv.att.dtype))
    return conv


def _dense_reference(x: torch.Tensor, adj: torch.Tensor, w: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    """The public code on a dense adjacency: ``adj[i, j] = 1`` means row ``i`` aggregates neighbour ``j``."""
    d = x.size(1)
    outs = []
    for k in range(w.size(0)):
        h = x * w[k]  # (N, d)
        logits = (h @ att[k, :d]).unsqueeze(1) + (h @ att[k, d:]).unsqueeze(0)  # [i, j] = a^T [h_i || h_j]
        e = torch.exp(-F.leaky_relu(logits, 0.2)) * adj
        outs.append((e @ h) / e.sum(dim=1, keepdim=True))
    return torch.stack(outs).mean(dim=0)


def test_shapes_and_init():
    conv = DiagGATConv(8, heads=3)
    assert conv.weight.shape == (3, 8) and conv.att.shape == (3, 16)
    assert torch.equal(conv.weight, torch.ones(3, 8))
    bound = 1.0 / math.sqrt(16)
    assert conv.att.abs().max() <= bound and conv.att.std() > 0
    x = torch.randn(10, 8)
    assert conv(x, _random_graph(10, 20)).shape == (10, 8)
    enc = GATEncoder(16)
    assert len(enc.layers) == 2 and all(isinstance(layer, DiagGATConv) and layer.heads == 2 for layer in enc.layers)
    assert enc(torch.randn(12, 16), _random_graph(12, 30)).shape == (12, 16)
    assert not any(name.endswith("bias") for name, _ in enc.named_parameters())


def test_attention_sums_to_one_per_node_and_head():
    conv = _randomise(DiagGATConv(6, heads=3))
    num_nodes = 9
    edge_index, alpha = conv.attention(torch.randn(num_nodes, 6), _random_graph(num_nodes, 15))
    assert alpha.shape == (edge_index.size(1), 3) and (alpha > 0).all()
    sums = scatter(alpha, edge_index[1], dim=0, dim_size=num_nodes, reduce="sum")
    torch.testing.assert_close(sums, torch.ones(num_nodes, 3))
    self_loops = edge_index[:, edge_index[0] == edge_index[1]]
    assert torch.equal(self_loops[0].sort().values, torch.arange(num_nodes))  # exactly one self-loop per node


@pytest.mark.parametrize("fused", [True, False])
def test_isolated_node_returns_its_own_h(fused):
    conv = _randomise(DiagGATConv(5, heads=2, fused=fused))
    x = torch.randn(4, 5)
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # node 3 has no neighbours
    out = conv(x, edge_index)
    torch.testing.assert_close(out[3], (x[3] * conv.weight).mean(dim=0))
    # No edges at all: every node keeps (the head-mean of) its own h.
    out = conv(x, torch.empty(2, 0, dtype=torch.long))
    torch.testing.assert_close(out, (x.unsqueeze(1) * conv.weight).mean(dim=1))


@pytest.mark.parametrize("fused", [True, False])
def test_matches_dense_public_reference(fused):
    torch.manual_seed(0)
    # A *directed* adjacency, so the target / neighbour roles are checked: adj[i, j] = 1 <=> edge j -> i.
    adj = torch.tensor([[0, 1, 0, 0, 1],
                        [1, 0, 1, 0, 0],
                        [0, 0, 0, 1, 1],
                        [1, 0, 0, 0, 0],
                        [0, 1, 1, 0, 0]], dtype=torch.float)
    x = torch.randn(5, 4)
    conv = _randomise(DiagGATConv(4, heads=3, fused=fused), seed=1)
    expected = _dense_reference(x, adj + torch.eye(5), conv.weight, conv.att)
    target, neighbour = adj.nonzero().t()
    edge_index = torch.stack([neighbour, target])
    torch.testing.assert_close(conv(x, edge_index), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(conv(x, edge_index.flip(0)), expected, atol=1e-3)  # the direction matters
    # The same graph with its self-loops given explicitly (add_self_loops=False) gives the same result ...
    conv.add_self_loops = False
    loops = torch.arange(5).repeat(2, 1)
    torch.testing.assert_close(conv(x, torch.cat([edge_index, loops], 1)), expected, atol=1e-5, rtol=1e-5)
    # ... and add_self_loops=True does not double existing ones.
    conv.add_self_loops = True
    torch.testing.assert_close(conv(x, torch.cat([loops, edge_index], 1)), expected, atol=1e-5, rtol=1e-5)


def test_fused_and_propagate_paths_agree_with_gradients():
    torch.manual_seed(0)
    edge_index = _random_graph(30, 80)
    fused, plain = _randomise(DiagGATConv(7, heads=2)), DiagGATConv(7, heads=2, fused=False)
    plain.load_state_dict(fused.state_dict())
    x1 = torch.randn(30, 7, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    out1, out2 = fused(x1, edge_index), plain(x2, edge_index)
    torch.testing.assert_close(out1, out2)
    g = torch.randn_like(out1)
    (out1 * g).sum().backward()
    (out2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(fused.weight.grad, plain.weight.grad)
    torch.testing.assert_close(fused.att.grad, plain.att.grad)


def test_fused_gradcheck():
    conv = DiagGATConv(3, heads=2).double()
    edge_index = torch.tensor([[0, 1, 1, 2, 3, 0], [1, 0, 2, 1, 1, 3]])
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = (0.5 + torch.rand(2, 3, dtype=torch.float64)).requires_grad_()
    a = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, a: functional_call(conv, {"weight": w, "att": a}, (x, edge_index)),
                                    (x, w, a))


@pytest.mark.parametrize("full_weights", [False, True])
def test_permutation_equivariance(full_weights):
    torch.manual_seed(0)
    num_nodes = 20
    enc = GATEncoder(8, heads=2, dropout=0.3, attn_dropout=0.3, full_weights=full_weights).eval()
    if not full_weights:
        for i, layer in enumerate(enc.layers):
            _randomise(layer, seed=i)
    x, edge_index = torch.randn(num_nodes, 8), _random_graph(num_nodes, 40)
    perm = torch.randperm(num_nodes)  # new node n is old node perm[n]
    relabel = torch.empty_like(perm)
    relabel[perm] = torch.arange(num_nodes)  # old node -> new label
    torch.testing.assert_close(enc(x[perm], relabel[edge_index]), enc(x, edge_index)[perm], atol=1e-5, rtol=1e-5)


def test_gradients_reach_weights_attention_and_input():
    enc = GATEncoder(6, heads=2, dropout=0.1, attn_dropout=0.1)
    x = torch.randn(15, 6, requires_grad=True)
    enc(x, _random_graph(15, 30)).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for layer in enc.layers:
        for p in (layer.weight, layer.att):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_dropout_only_in_training():
    torch.manual_seed(0)
    enc = GATEncoder(8, dropout=0.5, attn_dropout=0.5)
    x, edge_index = torch.randn(25, 8), _random_graph(25, 60)
    enc.eval()
    torch.testing.assert_close(enc(x, edge_index), enc(x, edge_index), atol=0, rtol=0)
    enc.train()
    assert not torch.allclose(enc(x, edge_index), enc(x, edge_index))


def test_cached_structure_follows_the_graph():
    conv = _randomise(DiagGATConv(4, heads=2))
    x, edge_index = torch.randn(12, 4), _random_graph(12, 25)
    first = conv(x, edge_index)
    assert conv._structure(edge_index, 12) is conv._structure(edge_index, 12)  # reused for the same tensor
    torch.testing.assert_close(conv(x, edge_index), first)
    edge_index[:, :4] = edge_index[:, :4].flip(0).roll(1, dims=1)  # modified in place -> re-prepared
    fresh = DiagGATConv(4, heads=2)
    fresh.load_state_dict(conv.state_dict())
    second = conv(x, edge_index)
    torch.testing.assert_close(second, fresh(x, edge_index.clone()))
    assert not torch.allclose(second, first)


def test_full_weights_variant():
    torch.manual_seed(0)
    diag, full = GATEncoder(8, heads=2), GATEncoder(8, heads=2, full_weights=True)
    assert all(isinstance(layer, GATConv) for layer in full.layers)
    assert {n for n, _ in diag.named_parameters()} != {n for n, _ in full.named_parameters()}
    assert sum(p.numel() for p in full.parameters()) > sum(p.numel() for p in diag.parameters())
    x = torch.randn(10, 8, requires_grad=True)
    out = full(x, _random_graph(10, 20))
    assert out.shape == (10, 8)
    out.sum().backward()
    assert x.grad is not None
