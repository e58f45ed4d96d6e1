"""EVA (Liu et al., AAAI 2021, "Visual Pivoting for (Unsupervised) Entity Alignment").

As the public code behaves (the authors' repository, github.com/cambridgeltl/eva):

* structure: a learnable entity table ``(N, hidden[0])`` (normal init, std ``1/sqrt(N)``) through a 2-layer
  GCN ``hidden[0] -> hidden[1] -> hidden[2]`` (400-400-200) over the normalised adjacency;
* relation / attribute (and, "with surface", name) features through linear heads to 100 dims, images to 200;
* joint embedding: concatenation of the L2-normalised modality embeddings scaled by learned softmax weights;
* loss: NCA per modality (alpha 5 for the graph view, 15 for the others, beta 10) plus NCA on the joint
  embedding of *detached* modality embeddings (the joint loss trains only the modality weights), in-batch.

Work: the joint embedding is fused for the rows of the step's links only (the fusion is row-wise, so these are the
rows fusing every entity would give), and :class:`NCALoss` writes its backward pass out (two ``(B, B)`` matrices
instead of about ten; ``B`` is every seed link): the same loss and gradients up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.data.modalities import describe_modalities, resolve_modalities
from mmea_lightning.models.aligners.base import Aligner
from mmea_lightning.models.encoders.gcn import GCNEncoder
from mmea_lightning.models.encoders.modality_encoders import ModalityEncoders
from mmea_lightning.models.fusion import WeightedConcatFusion
from mmea_lightning.models.losses.nca import NCALoss


class EVA(Aligner):
    """EVA's encoders, fusion and loss.

    Args:
        features: the pair's :class:`FeatureSet`.
        modalities: wanted modalities among ``structure``, ``relation``, ``attribute``, ``numeric``, ``image``.
        surface: add the name modalities (``name_sbert``, ``name_char``): the "with surface" setting.
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
        surface: bool = False,
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
            modalities, features.present, strict=strict_modalities, model="EVA", surface=surface
        )
        dims = {m: 100 for m in features.modalities} | {"image": 200} | dict(head_dims or {})
        self.encoders = ModalityEncoders(features, self.modalities, dims, input_dim=hidden[0],
                                         graph_encoder=partial(GCNEncoder, hidden, dropout=dropout))
        self.fusion = WeightedConcatFusion(len(self.modalities))
        self.losses = nn.ModuleDict(
            {m: NCALoss(alpha_graph if m == "structure" else alpha, beta) for m in self.modalities}
        )
        self.joint_loss = NCALoss(alpha, beta)

    def forward(self) -> torch.Tensor:
        """``(N, D)`` L2-normalised joint embeddings used for evaluation."""
        embeddings = self.encoders()
        return F.normalize(self.fusion([embeddings[m] for m in self.modalities]), dim=1)

    def training_loss(self, links: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``links (B, 2)`` seed links -> total loss and its parts (for logging)."""
        embeddings = self.encoders()
        parts = {m: self.losses[m](embeddings[m], links) for m in self.modalities}
        # the joint loss reads the links' rows only: fuse those (row-wise, the same rows as fusing every entity)
        batch = len(links)
        entities = torch.cat([links[:, 0], links[:, 1]])
        joint = self.fusion([embeddings[m][entities] for m in self.modalities], detach_inputs=True)
        local = torch.stack([torch.arange(batch, device=links.device),
                             torch.arange(batch, 2 * batch, device=links.device)], dim=1)
        parts["joint"] = self.joint_loss(joint, local)
        return torch.stack(list(parts.values())).sum(), parts

    def describe(self) -> dict:
        """What went into the model (recorded with the results)."""
        return describe_modalities(self.modalities, self.dropped_modalities, self.fusion.weights().tolist())
