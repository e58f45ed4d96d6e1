"""A plain multi-layer GCN over a pre-normalised adjacency (PyG ``GCNConv`` layers)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv

from mmea_lightning.models.encoders.sparse_matmul import ConstantSparseMatmul


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
        self._cache: tuple | None = None  # (adjacency, its version, its CSR transpose)

    def _transpose(self, adjacency: Tensor) -> Tensor:
        """The CSR transpose of ``adjacency``, built once while the very same tensor comes back."""
        cache = self._cache
        if cache is not None and cache[0] is adjacency and cache[1] == adjacency._version:
            return cache[2]
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            transpose = adjacency.t().to_sparse_csr()
        self._cache = (adjacency, adjacency._version, transpose)
        return transpose

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """``x (N, dims[0])``, the normalised ``adjacency (N, N)`` (torch sparse) -> ``(N, dims[-1])``: per layer
        ``adjacency @ (x W^T) + b`` -- what ``GCNConv(normalize=False, add_self_loops=False)`` computes on a sparse
        adjacency, with the transposed adjacency of the backward pass built once (sparse CSR; any other layout goes
        through ``GCNConv`` itself)."""
        fast = adjacency.layout == torch.sparse_csr
        transpose = self._transpose(adjacency) if fast and torch.is_grad_enabled() else None
        for i, layer in enumerate(self.layers):
            if fast:
                h = layer.lin(x)
                x = (ConstantSparseMatmul.apply(h, adjacency, transpose) if transpose is not None
                     else torch.sparse.mm(adjacency, h))
                if layer.bias is not None:
                    x = x + layer.bias
            else:
                x = layer(x, adjacency)
            if i + 1 < len(self.layers):
                x = F.dropout(F.relu(x), self.dropout, training=self.training)
        return x
