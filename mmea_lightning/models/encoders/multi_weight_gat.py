"""MPSEA's multi-weight GAT structure encoder (Eq. 1 of the MPSEA paper), as PyG ``MessagePassing`` layers.

Eq. 1 scores the edge ``j -> i`` with separate linear maps for the aggregating node ``i`` and its neighbour ``j``::

    e_ij = LeakyReLU(w^T [W_i h_i || W_j h_j])

The paper gives no more. What is built here, per head ``k`` (``H`` heads of ``d_out / H`` dims, concatenated --
"300-d hidden layer, two attention heads"), over the neighbourhood with a self-loop ``N(i) + {i}``::

    alpha^k_ij = softmax_{j in N(i) + {i}} LeakyReLU_0.2(a^k_node . W^k_i h_i + a^k_nbr . W^k_j h_j)
    out^k_i    = sum_{j in N(i) + {i}} alpha^k_ij W^k_j h_j                         (+ bias, after concatenating heads)

Choice (``self_message``): Eq. 1 is read literally -- ``W_i`` scores the aggregating node, ``W_j`` scores and
transforms every message, the self-loop's included (``self_message="neighbour"``, the default). The other reading,
``self_message="node"``, also sends the node's own message through ``W_i``
(``out_i = alpha_ii W_i h_i + sum_{j in N(i)} alpha_ij W_j h_j``). It was the default until measured on
FB15K-DB15K at 20% (MPSEA, validation MRR after 60 epochs): ``node`` 0.135, ``neighbour`` 0.207, plain GAT
0.208.
With its own map, each entity's free embedding reaches its output on a path of its own, which the training seeds
can fit without their neighbours -- and an entity outside the seeds is aligned through its neighbours. The paper's
own ``repl.GAT`` row is only slightly worse than the multi-weight GAT, which fits the literal reading better. (A
GraphSAGE-style root term ``W_i h_i + sum_j alpha_ij W_j h_j`` was tried first: on the toy pair it halved Hits@1.)
With ``W_i = W_j`` either reading *is* the plain GAT.

``multi_weight=False`` is the ``repl.GAT`` ablation: the plain GAT of Velickovic et al. -- one shared map ``W`` --
numerically PyG's ``GATConv(d_in, d_out / H, heads=H)`` (tested).

Edge convention as PyG: ``edge_index[0]`` is the neighbour ``j`` (source), ``edge_index[1]`` the aggregating node
``i`` (target); the entity graphs are undirected (both directions present). Existing self-loops are replaced by
one per node.

Performance: the maps are linear, so ``sum_j alpha_ij W_j h_j = W_j (sum_j alpha_ij h_j)``: all heads aggregate the
*untransformed* input with one stacked CSR spmm (the cached structure and custom autograd of
:mod:`mmea_lightning.models.encoders.gat`), then one batched product applies the neighbour maps; the attention
logits need only two ``(N, H)`` score tables. Nothing of size ``E x H x d`` is materialised. ``fused=False`` runs the
textbook ``propagate`` path instead (same result, tested). ``targets`` computes the rows of some nodes only (the
last layer of a training step needs only the entities of its links).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.utils import softmax

from mmea_lightning.models.encoders.gat import CachedAttentionStructure, _StackedSpmm, _Structure, stacked_structure

__all__ = ["SELF_MESSAGES", "MultiWeightGATConv", "MultiWeightGATEncoder"]

SELF_MESSAGES = ("neighbour", "node")


def _target_structure(st: _Structure, targets: Tensor, num_nodes: int, heads: int) -> _Structure:
    """The incoming edges of ``targets (T,)`` only, re-numbered ``[source j; local target 0 .. T-1]`` (sorted by
    local target, then source), as a stacked ``(H T, N)`` structure."""
    starts, counts = st.ptr[targets], st.ptr[targets + 1] - st.ptr[targets]
    local = torch.repeat_interleave(torch.arange(targets.numel(), device=targets.device), counts)
    first = torch.cumsum(counts, 0) - counts  # position of each target's first edge in the sub-list
    edge_ids = starts[local] + torch.arange(local.numel(), device=targets.device) - first[local]
    return stacked_structure(torch.stack([st.edge_index[0, edge_ids], local]), targets.numel(), num_nodes, heads)


class MultiWeightGATConv(CachedAttentionStructure, MessagePassing):
    """One multi-weight (or, with ``multi_weight=False``, plain) multi-head GAT layer: ``x (N, d_in) -> (N, d_out)``.

    Args:
        in_dim: input width ``d_in``.
        out_dim: output width ``d_out`` (the concatenation of ``heads`` heads of ``d_out / heads`` dims).
        heads: number of attention heads ``H`` (must divide ``out_dim``).
        multi_weight: separate node / neighbour maps (Eq. 1); ``False``: plain GAT.
        attn_dropout: dropout on the attention coefficients (training only).
        negative_slope: LeakyReLU slope of the attention logits.
        bias: add a learnable bias to the output.
        fused: aggregate with one stacked CSR spmm (default) instead of per-edge ``(E, H, d)`` messages.
        self_message: ``neighbour`` (the self-loop's message through ``W_j``, as every message) or ``node``
            (through ``W_i``); see the module docstring. Ignored by the plain GAT.

    Parameters: ``lin_nbr`` (``W_j`` of every head, ``(H d_head, d_in)``), ``lin_node`` (``W_i``, multi-weight only;
    the plain GAT uses ``lin_nbr`` for both), ``att_node`` / ``att_nbr`` ``(H, d_head)``, ``bias`` ``(d_out,)``.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int = 2, multi_weight: bool = True,
                 attn_dropout: float = 0.0, negative_slope: float = 0.2, bias: bool = True, fused: bool = True,
                 self_message: str = "neighbour"):
        super().__init__(aggr="add", node_dim=0)
        if self_message not in SELF_MESSAGES:
            raise ValueError(f"self_message must be one of {SELF_MESSAGES}, got {self_message!r}")
        if in_dim < 1 or out_dim < 1 or heads < 1 or out_dim % heads:
            raise ValueError(f"MultiWeightGATConv needs positive dims and heads dividing out_dim, got in_dim={in_dim}, "
                             f"out_dim={out_dim}, heads={heads}")
        self.in_dim, self.out_dim, self.heads = in_dim, out_dim, heads
        self.head_dim = out_dim // heads
        self.multi_weight = multi_weight
        self.attn_dropout = attn_dropout
        self.negative_slope = negative_slope
        self.fused = fused
        self.own_message = multi_weight and self_message == "node"  # the self-loop's message through W_i
        self.add_self_loops = True  # attend over N(i) + {i}
        self.lin_nbr = nn.Linear(in_dim, out_dim, bias=False)
        self.lin_node = nn.Linear(in_dim, out_dim, bias=False) if multi_weight else None
        self.att_node = nn.Parameter(torch.empty(heads, self.head_dim))
        self.att_nbr = nn.Parameter(torch.empty(heads, self.head_dim))
        self.bias = nn.Parameter(torch.empty(out_dim)) if bias else None
        self._cache: tuple | None = None
        self._block_cache: tuple | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.lin_nbr, self.lin_node):
            if lin is not None:
                nn.init.xavier_uniform_(lin.weight)
        for att in (self.att_node, self.att_nbr):
            nn.init.xavier_uniform_(att)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def node_map(self) -> nn.Linear:
        """``W_i``: the node's own map (the neighbour map in the plain GAT)."""
        return self.lin_node if self.lin_node is not None else self.lin_nbr

    def _project(self, x: Tensor, lin: nn.Linear, att: Tensor) -> Tensor:
        """``(n, H)`` scores ``att_k . (W^k x)`` through a ``(d_in, H)`` projection (``W^k`` never applied to x)."""
        w = lin.weight.view(self.heads, self.head_dim, self.in_dim)  # (H, d_head, d_in)
        return x @ torch.einsum("hoi,ho->ih", w, att)

    def _block_structure(self, st: _Structure) -> _Structure:
        """The block-diagonal ``(H N, H N)`` version of the full structure ``st`` (head ``k``'s edges shifted by
        ``k N`` on both sides; values head-major as ``alpha.t().reshape(-1)``), cached alongside it."""
        cache = self._block_cache
        if cache is not None and cache[0] is st:
            return cache[1]
        num_nodes = st.ptr.numel() - 1
        offsets = torch.arange(self.heads, device=st.edge_index.device).view(-1, 1, 1) * num_nodes
        blocks = (st.edge_index.unsqueeze(0) + offsets).transpose(0, 1).reshape(2, -1)  # (2, H E), head-major
        block = stacked_structure(blocks, self.heads * num_nodes, self.heads * num_nodes, 1)
        self._block_cache = (st, block)
        return block

    def _edges(self, x: Tensor, edge_index: Tensor, targets: Tensor | None) -> tuple[_Structure, Tensor]:
        """The structure to aggregate over -- every node, or only ``targets`` (rows ``0 .. T-1``) -- and its
        attention coefficients ``alpha (E', H)`` before dropout."""
        num_nodes = x.size(0)
        st = self._structure(edge_index, num_nodes)
        if targets is None:
            score_node = self._project(x, self.node_map, self.att_node)
            num_targets = num_nodes
        else:
            st = _target_structure(st, targets, num_nodes, self.heads)
            score_node = self._project(x[targets], self.node_map, self.att_node)
            num_targets = targets.numel()
        score_nbr = self._project(x, self.lin_nbr, self.att_nbr)
        alpha = self.edge_updater(st.edge_index, score=(score_nbr, score_node), size=(num_nodes, num_targets))
        return st, alpha

    def attention(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """The edges attended over ``(2, E')`` (sorted by target; self-loops added in the plain GAT) and their
        coefficients ``alpha (E', H)`` before dropout: ``alpha[edge_index[1] == i, k].sum() == 1`` for every node
        ``i`` with at least one incoming edge."""
        st, alpha = self._edges(x, edge_index, None)
        return st.edge_index, alpha

    def edge_update(self, score_j: Tensor, score_i: Tensor, index: Tensor, ptr: Tensor | None,
                    size_i: int | None) -> Tensor:
        return softmax(F.leaky_relu(score_i + score_j, self.negative_slope), index, ptr, size_i)

    def forward(self, x: Tensor, edge_index: Tensor, targets: Tensor | None = None) -> Tensor:
        """``x (N, d_in)``, ``edge_index (2, E)`` (``[neighbour j; node i]``) -> ``(N, d_out)``, or ``(T, d_out)`` for
        the nodes ``targets (T,)`` only (the same rows, computed from the whole graph, at a fraction of the cost)."""
        num_nodes = x.size(0)
        st, alpha = self._edges(x, edge_index, targets)
        alpha = F.dropout(alpha, self.attn_dropout, training=self.training)  # (E', H)
        num_targets = num_nodes if targets is None else targets.numel()
        if self.own_message:  # the self-loop carries W_i h_i, not W_j h_i
            nodes = torch.arange(num_nodes, device=x.device) if targets is None else targets
            src, dst = st.edge_index
            is_self = src == nodes[dst]  # exactly one self-loop per target
            self_alpha = alpha.new_zeros(num_targets, self.heads).index_copy(0, dst[is_self], alpha[is_self])
            alpha = alpha.masked_fill(is_self.unsqueeze(1), 0.0)
        if self.fused and targets is None:
            # every node: transform first (W_j x, N x d_out), then one block-diagonal spmm aggregates each head in its
            # own d_head columns -- half the sparse work of aggregating the d_in-wide input once per head
            own = None
            if self.own_message:  # W_j x and W_i x in one product
                h, own = F.linear(x, torch.cat([self.lin_nbr.weight, self.lin_node.weight])).split(self.out_dim, 1)
            else:
                h = self.lin_nbr(x)
            h = h.view(num_nodes, self.heads, self.head_dim).transpose(0, 1)
            h = h.reshape(self.heads * num_nodes, self.head_dim)  # (H N, d_head), head-major
            out = _StackedSpmm.apply(alpha.t().reshape(-1), h, self._block_structure(st))
            out = out.view(self.heads, num_nodes, self.head_dim).transpose(0, 1)  # (N, H, d_head)
        elif self.fused:
            # a few targets: aggregate the input first (A_k x, T x d_in per head), then map only those T rows
            agg = _StackedSpmm.apply(alpha.t().reshape(-1), x, st)  # (H T, d_in)
            agg = agg.view(self.heads, num_targets, self.in_dim)  # (H, T, d_in)
            w = self.lin_nbr.weight.view(self.heads, self.head_dim, self.in_dim)
            out = torch.bmm(agg, w.transpose(1, 2)).transpose(0, 1)  # (T, H, d_head): W_j^k (A_k x)
        else:
            h = self.lin_nbr(x).view(num_nodes, self.heads, self.head_dim)
            out = self.propagate(st.edge_index, h=h, alpha=alpha, size=(num_nodes, num_targets))
        if self.own_message:
            if not (self.fused and targets is None):
                own = self.lin_node(x if targets is None else x[targets])
            own = own.reshape(num_targets, self.heads, self.head_dim)
            out = out + self_alpha.unsqueeze(-1) * own  # alpha_ii W_i h_i
        out = out.reshape(num_targets, self.out_dim)
        if self.bias is not None:
            out = out + self.bias
        return out

    def message(self, h_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * h_j  # (E, H, d_head)

    def __repr__(self) -> str:
        kind = "multi_weight" if self.multi_weight else "plain"
        return f"{self.__class__.__name__}({self.in_dim}, {self.out_dim}, heads={self.heads}, {kind})"


class MultiWeightGATEncoder(nn.Module):
    """``x (N, d) -> (N, d)``: ``num_layers`` :class:`MultiWeightGATConv` layers of width ``d`` (``heads`` heads of
    ``d / heads`` dims each), with dropout on the input of and ELU after every layer but the last (the pattern of
    MCLEA / MEAformer's GAT). The last layer's output is the structural embedding ``x^g``.

    ``multi_weight=False`` gives the plain GAT of the ``repl.GAT`` ablation; ``self_message`` as
    :class:`MultiWeightGATConv`.
    """

    def __init__(self, dim: int = 300, num_layers: int = 2, heads: int = 2, multi_weight: bool = True,
                 dropout: float = 0.0, attn_dropout: float = 0.0, self_message: str = "neighbour"):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MultiWeightGATEncoder needs at least one layer, got num_layers={num_layers}")
        self.dim = dim
        self.dropout = dropout
        self.multi_weight = multi_weight
        self.layers = nn.ModuleList(
            MultiWeightGATConv(dim, dim, heads, multi_weight=multi_weight, attn_dropout=attn_dropout,
                               self_message=self_message)
            for _ in range(num_layers)
        )

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, targets: Tensor | None = None) -> Tensor:
        """``x (N, d)``, ``edge_index (2, E)`` (both directions of each undirected edge) -> ``(N, d)``, or the rows of
        ``targets (T,)`` only ``(T, d)``: the last layer then aggregates for those nodes alone (the earlier layers
        still run over the whole graph, as the targets' neighbourhoods need them)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i < last:
                x = F.dropout(x, self.dropout, training=self.training)
            x = layer(x, edge_index, targets if i == last else None)
            if i < last:
                x = F.elu(x)
        return x

