"""MPSEA's numeric-value embedding: the Deep Numerical Embedding Framework (DNEF, Eq. 4 of the MPSEA paper)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DNEFEncoder"]


class DNEFEncoder(nn.Module):
    """``index (n,) -> (n, d)`` numeric embeddings of entities from their numeric attribute values.

    Eq. 4 expands every numeric triple ``(e, a_i, n)`` into ``phi = n * gamma_i + zeta_i`` (``gamma_i, zeta_i`` in
    ``R^d`` learnable per attribute: a per-dimension scale and a shift that doubles as the attribute-key embedding),
    and a feed-forward net turns it into the entity's numeric embedding ``x^n``.

    Choices where the paper is vague:

    * the values are the :class:`~mmea_lightning.data.features.FeatureSet` ``numeric`` table -- per-attribute
      z-scores of the mmkb numeric triples (clipped), i.e. "normalised" numeric triples;
    * an entity with several numeric triples gets the *mean* of their ``phi`` (a linear pooling, computed as two
      ``(n, A) x (A, d)`` products), then the FFN (``Linear(d, ffn_dim) -> ReLU -> Linear(ffn_dim, d)``) once per
      entity -- the same function class per triple would cost one FFN per triple;
    * an entity without numeric values gets the zero vector and ``has_values`` is ``False`` for it (the aligner
      masks it out of attention, weights and losses).

    Args:
        values: ``(N, A)`` normalised values (0 where unknown).
        mask: ``(N, A)`` bool, known values.
        dim: output width ``d``.
        ffn_dim: hidden width of the FFN.
    """

    def __init__(self, values: Tensor, mask: Tensor, dim: int = 300, ffn_dim: int = 300):
        super().__init__()
        if values.shape != mask.shape or values.dim() != 2:
            raise ValueError(f"values and mask must both be (N, A), got {tuple(values.shape)} and {tuple(mask.shape)}")
        num_attributes = values.shape[1]
        self.gamma = nn.Parameter(torch.empty(num_attributes, dim))
        self.zeta = nn.Parameter(torch.empty(num_attributes, dim))
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        mask = mask.bool()
        self.register_buffer("values", values.float() * mask, persistent=False)
        self.register_buffer("known", mask.float(), persistent=False)
        self.register_buffer("has_values", mask.any(dim=1), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.gamma)
        nn.init.normal_(self.zeta)
        for layer in self.ffn:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    def phi(self, values: Tensor, attributes: Tensor) -> Tensor:
        """Eq. 4 for single triples: ``values (T,)``, attribute ids ``attributes (T,)`` -> ``(T, d)``."""
        return values.unsqueeze(1) * self.gamma[attributes] + self.zeta[attributes]

    def forward(self, index: Tensor | None = None) -> Tensor:
        """``(n, d)`` embeddings of the entities ``index`` (all entities when ``None``)."""
        values = self.values if index is None else self.values[index]
        known = self.known if index is None else self.known[index]
        count = known.sum(dim=1, keepdim=True)
        pooled = (values @ self.gamma + known @ self.zeta) / count.clamp(min=1.0)  # mean of phi over known triples
        return self.ffn(pooled) * (count > 0)
