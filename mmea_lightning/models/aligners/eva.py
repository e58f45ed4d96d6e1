"""EVA (Liu et al., AAAI 2021, "Visual Pivoting for (Unsupervised) Entity Alignment").

As the public code behaves (the authors' repository, github.com/cambridgeltl/eva):

* structure: a learnable entity table ``(N, hidden[0])`` (normal init, std ``1/sqrt(N)``) through a 2-layer
  GCN ``hidden[0] -> hidden[1] -> hidden[2]`` (400-400-200) over the normalised adjacency;
* relation / attribute (and, "with surface", name) features through linear heads to 100 dims, images to 200;
* joint embedding: concatenation of the L2-normalised modality embeddings scaled by learned softmax weights;
* loss: NCA per modality (alpha 5 for the graph view, 15 for the others, beta 10) plus NCA on the joint
  embedding of *detached* modality embeddings (the joint loss trains only the modality weights), in-batch.

Work: each modality's ``(B, B)`` cosine matrix of the step's links is computed once and serves both its own NCA
and the joint one: the joint cosines of the fused, detached rows are the weighted sum of the modalities' cosines
(:meth:`WeightedConcatFusion.joint_cosine`), so the joint loss costs no ``(B, sum d_m)`` product, forward or
backward. The NCA's backward is written out (:func:`nca_from_scores`: two ``(B, B)`` matrices instead of about ten;
``B`` is every seed link). The same loss and gradients as fusing the rows and applying :class:`NCALoss`, up to
float rounding (``tests/test_speed_equivalence.py``).
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
from mmea_lightning.models.losses.nca import NCALoss, nca_from_scores
from mmea_lightning.models.normalize import l2_normalize


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
        parts, scores, left_sq, right_sq = {}, [], [], []
        for m in self.modalities:
            left = l2_normalize(embeddings[m][links[:, 0]], dim=1)
            right = l2_normalize(embeddings[m][links[:, 1]], dim=1)
            score = left @ right.t()  # (B, B) cosines: the modality's NCA and, detached, the joint one
            parts[m] = nca_from_scores(score, self.losses[m].alpha, self.losses[m].beta)
            scores.append(score.detach())
            left_sq.append(left.detach().square().sum(1))
            right_sq.append(right.detach().square().sum(1))
        # the joint NCA of the fused, detached rows: their cosines follow from the modalities' (joint_cosine)
        parts["joint"] = nca_from_scores(self.fusion.joint_cosine(scores, left_sq, right_sq),
                                         self.joint_loss.alpha, self.joint_loss.beta)
        return torch.stack(list(parts.values())).sum(), parts

    def describe(self) -> dict:
        """What went into the model (recorded with the results)."""
        return describe_modalities(self.modalities, self.dropped_modalities, self.fusion.weights().tolist())
