"""The sparse multi-head graph-attention structure encoder of MCLEA / MEAformer, as PyG ``MessagePassing`` layers.

The public MCLEA / MEAformer code (``MultiHeadGraphAttention`` with ``diag=True`` and the ``GAT`` wrapper) uses
*diagonal* per-head weights, so a layer keeps the feature dimension: per head ``k``

    h_k = x * w_k                                                   (elementwise, w_k (d,), initialised to ones)
    e_ij = -LeakyReLU_0.2(a_k^T [h_k,i || h_k,j])                   (a_k (2d,), uniform(-1/sqrt(2d), 1/sqrt(2d)))
    alpha_ij = exp(e_ij) / sum_{j' -> i} exp(e_ij')                 (softmax over the incoming edges of i)
    out_k,i = sum_{j -> i} alpha_ij h_k,j

and the layer output is the mean over heads (no bias).

Edge convention: PyG's default ``source_to_target`` flow, i.e. ``edge_index[0]`` is the neighbour ``j`` (the message
source) and ``edge_index[1]`` the aggregating node ``i`` (the public code's adjacency row, ``edge[0]`` there). The first
half of ``a_k`` scores the aggregating node ``i`` and the second half the neighbour ``j``, as in the public
``cat((h[edge[0]], h[edge[1]]))``. The entity graphs are undirected (``edge_index`` holds both directions), where the
two conventions coincide.

Performance: the attention logits only need two per-node scores per head (``a_k^T [h_i || h_j]`` splits into
``(w_k * a_k,tgt)^T x_i + (w_k * a_k,nbr)^T x_j``), and since ``h_k,j = x_j * w_k`` the aggregation is
``out_k = (A_k x) * w_k`` with ``A_k`` the sparse attention matrix of head ``k``. All heads are aggregated by one CSR
sparse-dense matmul of the stacked ``(H N, N)`` attention matrix with ``x`` (custom autograd, so the backward is one
transposed spmm plus one sampled dense-dense product); nothing of size ``E x H x d`` or ``N x N`` is materialised.
The index structure (self-loops, sort by target, CSR pointers, transpose) is cached per layer and reused as long as
the very same ``edge_index`` tensor is passed (the entity graphs are static), so it is built once, not every step.
``fused=False`` runs the textbook ``propagate`` path (messages ``alpha_ij h_k,j`` of shape ``(E, H, d)``) instead;
both give the same result.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.index import index2ptr
from torch_geometric.nn import GATConv
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.utils import add_self_loops as add_self_loops_fn
from torch_geometric.utils import remove_self_loops, softmax, sort_edge_index

__all__ = ["CachedAttentionStructure", "DiagGATConv", "GATEncoder"]


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A torch CSR tensor without the one-off "CSR support is in beta" warning (the invariants hold by construction)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


class _Structure(NamedTuple):
    """The index structure of one graph, prepared once and reused while the same ``edge_index`` comes back.

    ``edge_index (2, E)`` is sorted by target, ``ptr (N + 1)`` its CSR row pointer. For the stacked ``(H N, N)``
    attention matrix (row ``k N + i`` = head ``k``, target ``i``; values head-major, ``alpha.t().reshape(-1)``):
    ``crow (H N + 1)``, ``col (H E)``. For its transpose ``(N, H N)``: ``crow_t (N + 1)``, ``col_t (H E)`` and
    ``perm_t (H E)``, the position of each transposed entry in the head-major value vector.
    """

    edge_index: Tensor
    ptr: Tensor
    crow: Tensor
    col: Tensor
    crow_t: Tensor
    col_t: Tensor
    perm_t: Tensor


class _StackedSpmm(torch.autograd.Function):
    """``out = A @ x`` for the stacked CSR attention matrix ``A (H N, N)`` with differentiable ``values (H E,)``.

    Backward: ``grad_x = A^T @ grad_out`` (a CSR spmm with the cached transposed pattern) and
    ``grad_values[e] = <grad_out[row_e], x[col_e]>`` (a sampled dense-dense product over the pattern), both without
    densifying ``A`` or materialising per-edge feature rows.
    """

    @staticmethod
    def forward(ctx, values: Tensor, x: Tensor, st: _Structure) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(values, x)
        ctx.st = st
        return _csr(st.crow, st.col, values, (st.crow.numel() - 1, x.size(0))) @ x

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        values, x = ctx.saved_tensors
        st: _Structure = ctx.st
        grad_out = grad_out.contiguous()
        num_rows = st.crow.numel() - 1
        grad_values = grad_x = None
        if ctx.needs_input_grad[0]:
            pattern = _csr(st.crow, st.col, torch.zeros_like(values), (num_rows, x.size(0)))
            grad_values = torch.sparse.sampled_addmm(pattern, grad_out, x.t(), beta=0.0).values()
        if ctx.needs_input_grad[1]:
            grad_x = _csr(st.crow_t, st.col_t, values[st.perm_t], (x.size(0), num_rows)) @ grad_out
        return grad_values, grad_x, None


def stacked_structure(edge_index: Tensor, num_targets: int, num_sources: int, heads: int) -> _Structure:
    """The :class:`_Structure` of ``edge_index (2, E)`` -- ``[source; target]``, sorted by target then source --
    for a stacked ``(H num_targets, num_sources)`` attention matrix (targets may be a subset of the nodes, numbered
    ``0 .. num_targets - 1``; sources index the full node table)."""
    src, dst = edge_index
    num_edges = src.numel()
    ptr = index2ptr(dst, num_targets)
    offsets = torch.arange(heads, device=src.device).unsqueeze(1)  # (H, 1)
    crow = torch.cat([(ptr[:-1].unsqueeze(0) + offsets * num_edges).reshape(-1),
                      ptr.new_full((1,), heads * num_edges)])
    col = src.repeat(heads)  # (H E,)
    # Transpose (num_sources, H num_targets): row j holds (k T + i) for its out-edges j -> i; a stable sort by j
    # keeps, within a row, head-major then target order, i.e. ascending columns.
    perm_t = torch.sort(col, stable=True).indices
    col_t = (dst.unsqueeze(0) + offsets * num_targets).reshape(-1)[perm_t]
    crow_t = index2ptr(col[perm_t], num_sources)
    return _Structure(edge_index, ptr, crow, col, crow_t, col_t, perm_t)


class CachedAttentionStructure:
    """Mixin for attention layers over a static graph: :meth:`_structure` prepares the index structure of the
    stacked ``(H N, N)`` attention matrix (self-loops as ``self.add_self_loops`` says, sorted by target, CSR
    pointers, transpose) once and reuses it while the very same ``edge_index`` tensor comes back.

    The host class sets ``self.heads``, ``self.add_self_loops`` and ``self._cache = None``.
    """

    heads: int
    add_self_loops: bool
    _cache: tuple | None

    def _structure(self, edge_index: Tensor, num_nodes: int) -> _Structure:
        """The prepared index structure of ``edge_index``, cached while the very same tensor is passed again.

        Entity graphs are static, so sorting / self-loop insertion / transposition happen once, not every step. The
        cache holds a reference to ``edge_index`` and is keyed on its identity, its in-place version counter and
        ``num_nodes``, so a different or modified graph is always re-prepared.
        """
        cache = self._cache
        if (cache is not None and cache[0] is edge_index and cache[1] == edge_index._version
                and cache[2] == num_nodes and cache[3] == self.add_self_loops):
            return cache[4]
        st = self._build_structure(edge_index, num_nodes)
        self._cache = (edge_index, edge_index._version, num_nodes, self.add_self_loops, st)
        return st

    def _build_structure(self, edge_index: Tensor, num_nodes: int) -> _Structure:
        if self.add_self_loops:
            edge_index, _ = remove_self_loops(edge_index)
            edge_index, _ = add_self_loops_fn(edge_index, num_nodes=num_nodes)
        edge_index = sort_edge_index(edge_index, num_nodes=num_nodes, sort_by_row=False)  # by target, then source
        return stacked_structure(edge_index, num_nodes, num_nodes, self.heads)


class DiagGATConv(CachedAttentionStructure, MessagePassing):
    """One diagonal-weight multi-head GAT layer: ``x (N, d) -> (N, d)``.

    Per head ``k``: ``h_k = x * w_k`` (``w (H, d)``, ones at init); for each edge ``j -> i`` (``edge_index[0] = j``,
    ``edge_index[1] = i``; self-loops are added when ``add_self_loops=True``, replacing any already present)
    ``e_ij = -LeakyReLU(a_k^T [h_k,i || h_k,j])`` with ``att (H, 2d)`` uniform in ``±1/sqrt(2d)``; ``alpha_ij`` is the
    softmax of ``e_ij`` over the incoming edges of ``i`` (``exp(e) / row sum`` of the public code, computed stably),
    followed by dropout on ``alpha`` when training; ``out_k,i = sum_j alpha_ij h_k,j``; output = mean over heads.
    No bias.

    Args:
        dim: feature dimension ``d`` (kept, the weights are diagonal).
        heads: number of attention heads ``H``.
        attn_dropout: dropout probability on the attention coefficients (training only).
        negative_slope: LeakyReLU slope of the attention logits.
        add_self_loops: remove existing and add one self-loop per node before attending.
        fused: aggregate with one stacked CSR spmm (fast, default) instead of per-edge ``(E, H, d)`` messages.
    """

    def __init__(self, dim: int, heads: int = 2, attn_dropout: float = 0.0, negative_slope: float = 0.2,
                 add_self_loops: bool = True, fused: bool = True):
        super().__init__(aggr="add", node_dim=0)
        if dim < 1 or heads < 1:
            raise ValueError(f"DiagGATConv needs dim >= 1 and heads >= 1, got dim={dim}, heads={heads}")
        self.dim = dim
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.negative_slope = negative_slope
        self.add_self_loops = add_self_loops
        self.fused = fused
        self.weight = nn.Parameter(torch.empty(heads, dim))  # w_k, the diagonal of head k's weight matrix
        self.att = nn.Parameter(torch.empty(heads, 2 * dim))  # a_k = [a_k,tgt || a_k,nbr]
        self._cache: tuple | None = None  # (edge_index, version, num_nodes, add_self_loops, _Structure)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.ones_(self.weight)
        bound = 1.0 / math.sqrt(2 * self.dim)
        nn.init.uniform_(self.att, -bound, bound)

    def _attention(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Attention coefficients ``alpha (E, H)`` of the prepared ``edge_index (2, E)``, before dropout."""
        # a_k^T [h_k,i || h_k,j] = (w_k * a_k,tgt)^T x_i + (w_k * a_k,nbr)^T x_j: two (N, H) score tables.
        score_tgt = x @ (self.weight * self.att[:, : self.dim]).t()
        score_nbr = x @ (self.weight * self.att[:, self.dim :]).t()
        return self.edge_updater(edge_index, score=(score_nbr, score_tgt), size=(x.size(0), x.size(0)))

    def edge_update(self, score_j: Tensor, score_i: Tensor, index: Tensor, ptr: Tensor | None,
                    size_i: int | None) -> Tensor:
        logits = -F.leaky_relu(score_i + score_j, self.negative_slope)  # (E, H)
        return softmax(logits, index, ptr, size_i)

    def attention(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """The edges actually attended over (self-loops added, sorted by target) ``(2, E')`` and ``alpha (E', H)``.

        ``alpha`` is the softmax before attention dropout: for every node ``i`` and head ``k``,
        ``alpha[edge_index[1] == i, k].sum() == 1``.
        """
        st = self._structure(edge_index, x.size(0))
        return st.edge_index, self._attention(x, st.edge_index)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """``x (N, d)``, ``edge_index (2, E)`` (``[source j; target i]``) -> ``(N, d)``."""
        num_nodes = x.size(0)
        st = self._structure(edge_index, num_nodes)
        alpha = self._attention(x, st.edge_index)  # (E', H)
        alpha = F.dropout(alpha, self.attn_dropout, training=self.training)
        if not self.fused:
            h = x.unsqueeze(1) * self.weight  # (N, H, d)
            out = self.propagate(st.edge_index, h=h, alpha=alpha, size=(num_nodes, num_nodes))  # (N, H, d)
            return out.mean(dim=1)
        # out_k = A_k (x * w_k) = (A_k x) * w_k: one spmm of the stacked (H N, N) attention matrix with x.
        agg = _StackedSpmm.apply(alpha.t().reshape(-1), x, st)  # (H N, d)
        return (agg.view(self.heads, num_nodes, self.dim) * self.weight.unsqueeze(1)).mean(dim=0)

    def message(self, h_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * h_j  # (E, H, d)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, heads={self.heads}, diag=True)"


class GATEncoder(nn.Module):
    """``x (N, d) -> (N, d)``: the MCLEA / MEAformer ``GAT`` structure encoder.

    ``num_layers`` :class:`DiagGATConv` layers (``heads`` each, head-mean output). As in the public code, dropout is
    applied to the input of every layer except the last, and ELU to the output of every layer except the last::

        for i, layer in enumerate(layers):
            if i + 1 < num_layers: x = dropout(x)
            x = layer(x, edge_index)
            if i + 1 < num_layers: x = elu(x)

    ``full_weights=True`` swaps in PyG ``GATConv(d, d, heads, concat=False)`` layers (full weight matrices, bias,
    standard GAT attention) with the same dropout / ELU pattern, for "replace the GAT" ablations.
    """

    def __init__(self, dim: int = 300, num_layers: int = 2, heads: int = 2, dropout: float = 0.0,
                 attn_dropout: float = 0.0, full_weights: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"GATEncoder needs at least one layer, got num_layers={num_layers}")
        self.dim = dim
        self.dropout = dropout
        self.full_weights = full_weights
        layers: list[nn.Module]
        if full_weights:
            layers = [GATConv(dim, dim, heads=heads, concat=False, dropout=attn_dropout) for _ in range(num_layers)]
        else:
            layers = [DiagGATConv(dim, heads=heads, attn_dropout=attn_dropout) for _ in range(num_layers)]
        self.layers = nn.ModuleList(layers)

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """``x (N, d)``, ``edge_index (2, E)`` (both directions of each undirected edge) -> ``(N, d)``."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i < last:
                x = F.dropout(x, self.dropout, training=self.training)
            x = layer(x, edge_index)
            if i < last:
                x = F.elu(x)
        return x
