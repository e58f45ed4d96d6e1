"""A linear head over a fixed per-entity feature table (bag-of-words, image vectors, name vectors)."""

from __future__ import annotations

import warnings

import torch
from torch import nn


class FeatureHead(nn.Module):
    """``table (N, F) -> (N, out_dim)``: ``table @ W^T + b``.

    The table is a non-persistent buffer (it moves with the module, stays out of checkpoints). Mostly-zero tables
    (relation/attribute counts: a few non-zeros per entity) are stored as sparse CSR, so the product costs
    ``O(nnz * out_dim)`` instead of ``O(N * F * out_dim)`` -- the same result, an order of magnitude faster.
    """

    def __init__(self, table: torch.Tensor, out_dim: int, sparse_below_density: float = 0.05):
        super().__init__()
        self.linear = nn.Linear(table.shape[1], out_dim)
        density = float((table != 0).float().mean()) if table.numel() else 1.0
        self.sparse = density < sparse_below_density
        if self.sparse:
            with warnings.catch_warnings():  # "sparse CSR support is in beta": sparse.mm is stable
                warnings.simplefilter("ignore", UserWarning)
                table = table.to_sparse_csr()
        self.register_buffer("table", table, persistent=False)

    def forward(self) -> torch.Tensor:
        if self.sparse:
            return torch.sparse.mm(self.table, self.linear.weight.t()) + self.linear.bias
        return self.linear(self.table)
