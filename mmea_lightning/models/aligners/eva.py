"""EVA (Liu et al., AAAI 2021, "Visual Pivoting for (Unsupervised) Entity Alignment").

As the public code behaves (see ``../shared/docs/REFERENCE.md``):

* structure: a learnable entity table ``(N, hidden[0])`` (normal init, std ``1/sqrt(N)``) through a 2-layer GCN
  ``hidden[0] -> hidden[1] -> hidden[2]`` (400-400-200) over the normalised adjacency;
* relation / attribute (and, in the "with surface" setting, name) features through linear heads to 100 dims,
  image features through a linear head to 200 dims;
* joint embedding: concatenation of the L2-normalised modality embeddings, each scaled by a learned softmax weight;
* loss: NCA per modality (alpha 5 for the graph view, 15 for the others, beta 10) plus NCA on the joint embedding,
  computed from *detached* modality embeddings (so the joint loss trains only the modality weights), in-batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.models.encoders.feature_head import FeatureHead
from mmea_lightning.models.encoders.gcn import GCNEncoder
from mmea_lightning.models.losses.nca import NCALoss
from mmea_lightning.models.modalities import resolve_modalities

FEATURE_MODALITIES = ("relation", "attribute", "numeric", "image", "name_char", "name_sbert")


class EVA(nn.Module):
    """EVA's encoders, fusion and loss.

    Args:
        features: the pair's :class:`FeatureSet` (feature tensors are kept as non-persistent buffers).
        modalities: wanted modalities among ``structure`` and :data:`FEATURE_MODALITIES`.
        hidden: GCN dims ``(input, hidden, output)``.
        head_dims: output dim per feature modality (default 100; 200 for ``image``).
        dropout: dropout between GCN layers.
        alpha_graph / alpha / beta: NCA parameters of the graph view / the other views and the joint view.
        strict_modalities: a wanted modality the data lacks is an error (else dropped and recorded).
    """

    def __init__(
        self,
        features: FeatureSet,
        modalities: Sequence[str] = ("structure", "relation", "attribute", "image"),
        hidden: Sequence[int] = (400, 400, 200),
        head_dims: dict[str, int] | None = None,
        dropout: float = 0.0,
        alpha_graph: float = 5.0,
        alpha: float = 15.0,
        beta: float = 10.0,
        strict_modalities: bool = False,
    ):
        super().__init__()
        self.modalities, self.dropped_modalities = resolve_modalities(
            modalities, features.present, strict=strict_modalities, model="EVA"
        )
        dims = {"image": 200, **{m: 100 for m in FEATURE_MODALITIES if m != "image"}, **dict(head_dims or {})}
        self.heads = nn.ModuleDict()
        for m in self.modalities:
            if m == "structure":
                n = features.num_entities
                self.entity_embedding = nn.Embedding(n, hidden[0])
                nn.init.normal_(self.entity_embedding.weight, std=1.0 / math.sqrt(n))
                self.gcn = GCNEncoder(hidden, dropout=dropout)
                self.register_buffer("adjacency", features.adjacency, persistent=False)
            else:
                self.heads[m] = FeatureHead(features.modalities[m], dims[m])
        self.modality_logits = nn.Parameter(torch.ones(len(self.modalities)))
        self.losses = nn.ModuleDict(
            {m: NCALoss(alpha_graph if m == "structure" else alpha, beta) for m in self.modalities}
        )
        self.joint_loss = NCALoss(alpha, beta)

    def modality_embeddings(self) -> dict[str, torch.Tensor]:
        """Modality -> ``(N, d_m)`` embeddings of every entity."""
        out = {}
        for m in self.modalities:
            if m == "structure":
                out[m] = self.gcn(self.entity_embedding.weight, self.adjacency)
            else:
                out[m] = self.heads[m]()
        return out

    def modality_weights(self) -> torch.Tensor:
        """``(M,)`` softmax weights in the order of :attr:`modalities`."""
        return F.softmax(self.modality_logits, dim=0)

    def fuse(self, embeddings: dict[str, torch.Tensor], detach: bool = False) -> torch.Tensor:
        """``(N, sum d_m)``: weighted concatenation of the L2-normalised modality embeddings."""
        weights = self.modality_weights()
        parts = []
        for w, m in zip(weights, self.modalities):
            e = F.normalize(embeddings[m], dim=1)
            parts.append(w * (e.detach() if detach else e))
        return torch.cat(parts, dim=1)

    def forward(self) -> torch.Tensor:
        """``(N, D)`` L2-normalised joint embeddings used for evaluation."""
        return F.normalize(self.fuse(self.modality_embeddings()), dim=1)

    def training_loss(self, links: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``links (B, 2)`` seed links -> total loss and its parts (for logging)."""
        embeddings = self.modality_embeddings()
        parts = {m: self.losses[m](embeddings[m], links) for m in self.modalities}
        parts["joint"] = self.joint_loss(self.fuse(embeddings, detach=True), links)
        total = torch.stack(list(parts.values())).sum()
        return total, parts

    def describe(self) -> dict:
        """What went into the model (recorded with the results)."""
        return {
            "modalities_used": list(self.modalities),
            "modalities_dropped": list(self.dropped_modalities),
            "modality_weights": {m: float(w) for m, w in zip(self.modalities, self.modality_weights().detach())},
        }
