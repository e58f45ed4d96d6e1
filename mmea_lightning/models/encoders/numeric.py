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
    * an entity with several numeric triples gets the *mean* of their ``phi``, then the FFN
      (``Linear(d, ffn_dim) -> ReLU -> Linear(ffn_dim, d)``) once per entity (one FFN per triple would cost as many
      FFNs as triples);
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
        entity, attribute = mask.nonzero(as_tuple=True)  # the numeric triples, sorted by entity
        self.register_buffer("triple_entity", entity, persistent=False)
        self.register_buffer("triple_attribute", attribute, persistent=False)
        self.register_buffer("triple_value", values.float()[entity, attribute], persistent=False)
        counts = mask.sum(dim=1)
        self.register_buffer("ptr", torch.cat([counts.new_zeros(1), counts.cumsum(0)]), persistent=False)
        self.register_buffer("has_values", counts > 0, persistent=False)
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
        """``(n, d)`` embeddings of the entities ``index`` (all entities when ``None``); only their triples are
        expanded (Eq. 4 per triple, then the mean per entity and the FFN)."""
        if index is None:
            triples, owner = slice(None), self.triple_entity
            counts = self.ptr[1:] - self.ptr[:-1]
        else:
            starts, counts = self.ptr[index], self.ptr[index + 1] - self.ptr[index]
            owner = torch.repeat_interleave(torch.arange(index.numel(), device=index.device), counts)
            first = torch.cumsum(counts, 0) - counts  # each entity's first triple in the gathered list
            triples = starts[owner] + torch.arange(owner.numel(), device=index.device) - first[owner]
        phi = self.phi(self.triple_value[triples], self.triple_attribute[triples])  # (T, d)
        pooled = phi.new_zeros(counts.numel(), phi.shape[1]).index_add_(0, owner, phi)
        pooled = pooled / counts.clamp(min=1).unsqueeze(1).to(phi.dtype)  # mean of phi over the known triples
        return self.ffn(pooled) * (counts > 0).unsqueeze(1)
