"""One encoder per modality, shared by the aligners: the structure view and the feature heads."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch
from torch import nn

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.models.encoders.feature_head import FeatureHead


class ModalityEncoders(nn.Module):
    """``() -> {modality: (N, d_m)}`` for every entity.

    * ``structure``: a learnable entity table ``(N, input_dim)`` (normal init, std ``1/sqrt(N)``, as EVA/MCLEA)
      through ``graph_encoder(x, graph)``, where ``graph`` is the normalised sparse adjacency (``graph_input=
      "adjacency"``, GCN) or the undirected ``edge_index`` (``"edge_index"``, GAT);
    * every other modality: a :class:`FeatureHead` over its feature table to ``head_dims[m]`` dims.

    Args:
        features: the pair's :class:`FeatureSet`.
        modalities: the modalities to encode (already checked against the data).
        head_dims: output dim per feature modality.
        graph_encoder: factory of the ``nn.Module`` mapping ``(x (N, input_dim), graph) -> (N, d_s)``; needed with
            ``structure``. (A factory, so that parameters are created in modality order: same seed, same init.)
        input_dim: width of the entity table.
    """

    def __init__(self, features: FeatureSet, modalities: Sequence[str], head_dims: Mapping[str, int],
                 graph_encoder: Callable[[], nn.Module] | None = None, input_dim: int = 300,
                 graph_input: str = "adjacency"):
        super().__init__()
        self.modalities = list(modalities)
        self.heads = nn.ModuleDict()
        if graph_input not in ("adjacency", "edge_index"):
            raise ValueError(f"graph_input must be 'adjacency' or 'edge_index', not {graph_input!r}")
        for m in self.modalities:
            if m != "structure":
                self.heads[m] = FeatureHead(features.modalities[m], head_dims[m])
                continue
            if graph_encoder is None:
                raise ValueError("the structure modality needs a graph encoder")
            n = features.num_entities
            self.entity_embedding = nn.Embedding(n, input_dim)
            nn.init.normal_(self.entity_embedding.weight, std=1.0 / math.sqrt(n))
            self.graph_encoder = graph_encoder()
            graph = features.adjacency if graph_input == "adjacency" else features.edge_index
            self.register_buffer("graph", graph, persistent=False)

    def forward(self) -> dict[str, torch.Tensor]:
        out = {}
        for m in self.modalities:
            if m == "structure":
                out[m] = self.graph_encoder(self.entity_embedding.weight, self.graph)
            else:
                out[m] = self.heads[m]()
        return out


def gat_modality_encoders(features: FeatureSet, modalities: Sequence[str], head_dim: int, hidden: int,
                          gat: Mapping | None = None) -> ModalityEncoders:
    """MCLEA / MEAformer encoders: an entity table ``(N, hidden)`` through :class:`GATEncoder` (``gat``: its
    ``num_layers``, ``heads``, ``dropout``, ``attn_dropout``, ``full_weights``) and every feature head to
    ``head_dim``."""
    from mmea_lightning.models.encoders.gat import GATEncoder

    return ModalityEncoders(features, modalities, {m: head_dim for m in features.modalities}, input_dim=hidden,
                            graph_input="edge_index", graph_encoder=partial(GATEncoder, hidden, **dict(gat or {})))
