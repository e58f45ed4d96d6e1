"""``matrix @ x`` for a constant sparse matrix (a graph's adjacency, a bag-of-words feature table), with a backward
that multiplies by the matrix's transpose prepared once."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["ConstantSparseMatmul"]


class ConstantSparseMatmul(torch.autograd.Function):
    """``apply(x (F, d), matrix (N, F), matrix_t (F, N)) -> (N, d)``: ``matrix @ x`` for a constant sparse CSR
    ``matrix`` and a dense ``x``; the gradient of ``x`` is ``matrix_t @ grad``, with the transpose ``matrix_t`` (sparse
    CSR) prepared once by the caller (``torch.sparse.mm``'s own backward transposes the CSR matrix -- a sort of every
    non-zero -- at every step). No gradient flows to the matrix."""

    @staticmethod
    def forward(ctx, x: Tensor, matrix: Tensor, matrix_t: Tensor) -> Tensor:  # type: ignore[override]
        ctx.matrix_t = matrix_t
        return torch.sparse.mm(matrix, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return torch.sparse.mm(ctx.matrix_t, grad.contiguous()), None, None
