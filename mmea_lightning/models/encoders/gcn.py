"""A plain multi-layer GCN over a pre-normalised adjacency (PyG ``GCNConv`` layers)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GCNConv


class GCNEncoder(nn.Module):
    """``x (N, dims[0]) -> (N, dims[-1])``: GCN layers with ReLU and dropout between them.

    The adjacency is passed already normalised (``D^-1/2 (A + I) D^-1/2``, a torch sparse ``(N, N)`` tensor), so
    the layers neither re-normalise nor add self-loops: one sparse matmul per layer.
    """

    def __init__(self, dims: Sequence[int], dropout: float = 0.0):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"GCNEncoder needs at least input and output dims, got {list(dims)}")
        self.layers = nn.ModuleList(
            GCNConv(d_in, d_out, normalize=False, add_self_loops=False) for d_in, d_out in zip(dims[:-1], dims[1:])
        )
        self.dropout = dropout

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, adjacency)
            if i + 1 < len(self.layers):
                x = F.dropout(F.relu(x), self.dropout, training=self.training)
        return x
