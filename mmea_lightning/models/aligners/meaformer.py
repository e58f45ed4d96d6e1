"""MEAformer (Chen et al., ACM MM 2023, "MEAformer: Multi-modal Entity Alignment Transformer for Meta Modality
Hybrid").

As the public code behaves (github.com/zjukg/MEAformer), with one difference in *where* work is done:

* MCLEA's encoders (entity table through a 2-layer 2-head diagonal GAT, linear feature heads), every modality
  300-d so that the modalities are tokens of one sequence;
* :class:`TransformerModalityFusion` (1 layer, 1 head) predicts entity-level modality weights; the joint embedding
  is the weighted concatenation of the normalised modality embeddings;
* loss = ICL(joint) + UW([ICL(m) before fusion]) + UW([ICL(m) after fusion]) (one uncertainty weighting shared by
  both, as the public code), ICL at temperature 0.1;
* defaults of the public code: AdamW lr 5e-4, weight decay 1e-4, cosine schedule with 15 % warm-up, gradient
  clipping 1, batch 3500, 500 epochs (``conf/model/meaformer.yaml``).

Where the public code runs the fusion over every entity at every step, the fusion here runs only over the
entities of the step's links (the only ones the loss reads), and over all entities in chunks at evaluation time:
the same loss, a fraction of the work. The losses share their work too (:meth:`ICLLoss.paired
<mmea_lightning.models.losses.icl.ICLLoss.paired>`): the similarity blocks of all modalities come from one batched
product, and the joint embedding's (the concatenation of the weighted unit-norm tokens) follow from them and the
weights instead of an ``(M d)``-wide product -- the same losses and gradients up to float rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.data.modalities import describe_modalities, resolve_modalities
from mmea_lightning.models.aligners.base import Aligner
from mmea_lightning.models.encoders.modality_encoders import gat_modality_encoders
from mmea_lightning.models.fusion import TransformerModalityFusion
from mmea_lightning.models.losses.icl import ICLLoss
from mmea_lightning.models.losses.weighting import UncertaintyWeighting


class MEAformer(Aligner):
    """MEAformer's encoders, transformer fusion and losses.

    Args:
        features: the pair's :class:`FeatureSet`.
        modalities: wanted modalities among ``structure``, ``relation``, ``attribute``, ``numeric``, ``image``.
        surface: add the name modalities (the "with surface" setting).
        hidden: width of every modality token (entity table, GAT, feature heads).
        gat: :class:`GATEncoder` settings (default 2 layers, 2 heads, no dropout).
        fusion_heads / fusion_layers / feedforward_dim / use_feedforward / fusion_dropout: the fusion transformer.
        temperature: ICL temperature.
        eval_chunk_size: entities fused at once when embedding every entity.
        strict_modalities: a wanted modality the data lacks is an error (else dropped and recorded).
    """

    name = "MEAformer"

    def __init__(
        self,
        features: FeatureSet,
        modalities: Sequence[str] = ("structure", "relation", "attribute", "image"),
        surface: bool = False,
        hidden: int = 300,
        gat: Mapping | None = None,
        fusion_heads: int = 1,
        fusion_layers: int = 1,
        feedforward_dim: int = 400,
        use_feedforward: bool = True,
        fusion_dropout: float = 0.1,
        temperature: float = 0.1,
        eval_chunk_size: int = 8192,
        strict_modalities: bool = False,
    ):
        super().__init__()
        self.modalities, self.dropped_modalities = resolve_modalities(
            modalities, features.present, strict=strict_modalities, model=self.name, surface=surface
        )
        self.encoders = gat_modality_encoders(features, self.modalities, hidden, hidden, gat)
        self.fusion = TransformerModalityFusion(hidden, fusion_heads, fusion_layers, feedforward_dim,
                                                use_feedforward, fusion_dropout, fusion_dropout)
        self.icl = ICLLoss(temperature)
        self.weighting = UncertaintyWeighting(len(self.modalities))
        self.eval_chunk_size = eval_chunk_size
        self._last_weights: torch.Tensor | None = None

    def tokens(self, embeddings: dict[str, torch.Tensor], index: torch.Tensor | slice) -> torch.Tensor:
        """``(B, M, hidden)`` modality tokens of the entities ``index``."""
        return torch.stack([embeddings[m][index] for m in self.modalities], dim=1)

    def forward(self) -> torch.Tensor:
        """``(N, M * hidden)`` L2-normalised joint embeddings of every entity (fused in chunks)."""
        embeddings = self.encoders()
        n = next(iter(embeddings.values())).shape[0]
        joints, weights = [], []
        for start in range(0, n, self.eval_chunk_size):
            joint, _, w = self.fusion(self.tokens(embeddings, slice(start, start + self.eval_chunk_size)))
            joints.append(joint)
            weights.append(w)
        self._last_weights = torch.cat(weights).detach()
        return F.normalize(torch.cat(joints), dim=1)

    def training_loss(self, links: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embeddings = self.encoders()
        entities = torch.cat([links[:, 0], links[:, 1]])  # fuse only what the loss reads: row i <-> row B + i
        tokens = self.tokens(embeddings, entities)  # (2B, M, d)
        _, hidden, weights = self.fusion(tokens)
        # before fusion, and the joint embedding [w_m x_m / |x_m|]_m whose blocks follow from theirs; after fusion
        before, joint = self.icl.paired(tokens.transpose(0, 1), weights=weights)
        after, _ = self.icl.paired(hidden.transpose(0, 1))
        parts = {"joint": joint, "before": self.weighting(list(before.unbind(0))),
                 "after": self.weighting(list(after.unbind(0)))}
        return parts["joint"] + parts["before"] + parts["after"], parts

    def describe(self) -> dict:
        info = describe_modalities(self.modalities, self.dropped_modalities)
        if self._last_weights is not None:
            info["mean_modality_weights"] = dict(zip(self.modalities, self._last_weights.mean(0).tolist()))
        return info
