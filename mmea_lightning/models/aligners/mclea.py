"""MCLEA (Lin et al., COLING 2022, "Multi-modal Contrastive Representation Learning for Entity Alignment").

As the public code behaves (the authors' repository, github.com/lzxlin/MCLEA):

* structure: entity table ``(N, 300)`` through a 2-layer, 2-head GAT with diagonal weights (300-d);
* relation / attribute / image (and, "with surface", name and character-bigram) features through linear heads
  to 100 dims;
* joint embedding: weighted concatenation of the L2-normalised modality embeddings (learned softmax weights);
* loss = ICL(joint) + UW([ICL(m) for every modality]) + zoom * UW([IAL(m, joint) for every modality]), with ICL at
  temperature 0.1 (in-batch negatives from both graphs, bidirectional), IAL = KL towards the detached joint
  distribution at temperature 4 (itself scaled by ``zoom``: the public code applies ``zoom = 0.1`` twice, kept), and
  UW = learned uncertainty weighting;
* one optimiser step per epoch over all seed links, the losses summed over consecutive chunks of 512 links
  (``chunk_size``): the public code's manual batching with gradient accumulation.

Work: the losses read the rows of the step's links only, so those rows are gathered once and only they are fused (the
fusion is row-wise: the same rows as fusing every entity); :class:`ICLLoss` computes its similarity blocks and its
backward pass in closed form (see :mod:`mmea_lightning.models.losses.icl`). Same losses and gradients up to float
rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.data.modalities import describe_modalities, resolve_modalities
from mmea_lightning.models.aligners.base import Aligner
from mmea_lightning.models.encoders.modality_encoders import gat_modality_encoders
from mmea_lightning.models.fusion import WeightedConcatFusion
from mmea_lightning.models.losses.ial import IALLoss
from mmea_lightning.models.losses.icl import ICLLoss
from mmea_lightning.models.losses.weighting import UncertaintyWeighting


class MCLEA(Aligner):
    """MCLEA's encoders, fusion and losses.

    Args:
        features: the pair's :class:`FeatureSet`.
        modalities: wanted modalities among ``structure``, ``relation``, ``attribute``, ``numeric``, ``image``.
        surface: add the name modalities (the "with surface" setting).
        hidden: width of the entity table and of the GAT.
        gat: :class:`GATEncoder` settings (default 2 layers, 2 heads, no dropout).
        head_dim: output dim of every feature head (100).
        temperature / ial_temperature / zoom: ICL temperature (0.1), IAL temperature (4.0), IAL scale (0.1).
        chunk_size: links per in-batch-negative chunk (512).
        use_ial: add the intra-modal alignment loss.
        strict_modalities: a wanted modality the data lacks is an error (else dropped and recorded).
    """

    name = "MCLEA"

    def __init__(
        self,
        features: FeatureSet,
        modalities: Sequence[str] = ("structure", "relation", "attribute", "image"),
        surface: bool = False,
        hidden: int = 300,
        gat: Mapping | None = None,
        head_dim: int = 100,
        temperature: float = 0.1,
        ial_temperature: float = 4.0,
        zoom: float = 0.1,
        chunk_size: int | None = 512,
        use_ial: bool = True,
        strict_modalities: bool = False,
    ):
        super().__init__()
        self.modalities, self.dropped_modalities = resolve_modalities(
            modalities, features.present, strict=strict_modalities, model=self.name, surface=surface
        )
        self.encoders = gat_modality_encoders(features, self.modalities, head_dim, hidden, gat)
        self.fusion = WeightedConcatFusion(len(self.modalities))
        self.icl = ICLLoss(temperature, chunk_size=chunk_size)
        self.ial = IALLoss(ial_temperature, zoom=zoom, chunk_size=chunk_size) if use_ial else None
        self.zoom = zoom
        self.intra_weighting = UncertaintyWeighting(len(self.modalities))
        self.align_weighting = UncertaintyWeighting(len(self.modalities)) if use_ial else None

    def embeddings(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Modality -> ``(N, d_m)`` embeddings, and the ``(N, D)`` joint embedding (not normalised)."""
        embeddings = self.encoders()
        return embeddings, self.fusion([embeddings[m] for m in self.modalities])

    def forward(self) -> torch.Tensor:
        """``(N, D)`` L2-normalised joint embeddings used for evaluation."""
        return F.normalize(self.embeddings()[1], dim=1)

    def training_loss(self, links: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embeddings = self.encoders()
        # every loss reads the links' rows only: gather them once, fuse those (row-wise, as fusing every entity)
        batch = len(links)
        entities = torch.cat([links[:, 0], links[:, 1]])
        embeddings = {m: embeddings[m][entities] for m in self.modalities}
        joint = self.fusion([embeddings[m] for m in self.modalities])
        links = torch.stack([torch.arange(batch, device=entities.device),
                             torch.arange(batch, 2 * batch, device=entities.device)], dim=1)
        intra = [self.icl(embeddings[m], links) for m in self.modalities]
        parts = {"joint": self.icl(joint, links), "intra": self.intra_weighting(intra)}
        parts.update({f"icl_{m}": loss.detach() for m, loss in zip(self.modalities, intra)})
        if self.ial is not None:
            align = [self.ial(embeddings[m], joint, links) for m in self.modalities]
            parts["align"] = self.zoom * self.align_weighting(align)
        total = parts["joint"] + parts["intra"] + parts.get("align", 0.0)
        return total, parts

    def describe(self) -> dict:
        return describe_modalities(self.modalities, self.dropped_modalities, self.fusion.weights().tolist())
