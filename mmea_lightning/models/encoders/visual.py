"""MPSEA's visual embedding (Eq. 3 of the MPSEA paper): image features through a fully connected layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["VisualEncoder"]


class VisualEncoder(nn.Module):
    """``index (n,) -> (n, d)``: ``x^v = FC_v(h^v) = h^v W_v^T + b``.

    Entities without an image: Eq. 3's handling (following EVA) is a random normal 4096-d vector in place of the
    missing VGG-16 feature. :func:`mmea_lightning.data.features.image_features` already builds the table that way
    (per-dimension mean/std of the known vectors, drawn from ``features.feature_seed``, then L2-normalised) and keeps
    the ``has_image`` mask, so this layer takes the table as it is; those entities are *not* masked downstream, as in
    the paper. When the data has no image vector at all there is no table and no visual modality: the aligner drops
    ``image`` and records it (never noise posing as images).

    Args:
        table: ``(N, F)`` image features (stand-ins included).
        dim: output width ``d``.
        has_image: ``(N,)`` bool, entities with a real image (kept for reporting).
    """

    def __init__(self, table: Tensor, dim: int = 300, has_image: Tensor | None = None):
        super().__init__()
        if table.dim() != 2 or table.shape[0] == 0:
            raise ValueError(f"the image table must be a non-empty (N, F) tensor, got shape {tuple(table.shape)}")
        self.linear = nn.Linear(table.shape[1], dim)
        self.register_buffer("table", table.float(), persistent=False)
        mask = has_image.bool() if has_image is not None else torch.ones(table.shape[0], dtype=torch.bool)
        self.register_buffer("has_image", mask, persistent=False)

    def forward(self, index: Tensor | None = None) -> Tensor:
        """``(n, d)`` embeddings of the entities ``index`` (all entities when ``None``); only those rows are
        projected (a 4096-d table times 300 outputs is the costliest head)."""
        return self.linear(self.table if index is None else self.table[index])
