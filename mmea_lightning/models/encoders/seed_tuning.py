"""PSQE Stage II's contrastive fine-tuning model (paper Eq. 5-6): ``H^v = GAT(linear(h^v))``, ``H^m = linear(h^m)``.

The seed generator (:mod:`mmea_lightning.seeds.global_sampling`) sits below the models in the package and does not
import them: ``conf/seeds/psqe.yaml`` hands it this class as its ``model`` factory (``_partial_: true`` with ``dim``,
``gat_layers``, ``gat_heads``), and the generator prepares the input tables (see
:func:`mmea_lightning.seeds.tuning.build_tuning_model`). Any module with the same call signature and output can
replace it there.

* GAT: the framework's diagonal multi-head GAT (2 layers, 2 heads, 300-d as the released code) over the projected
  "graph view" input (the primary modality, or the concatenation of the head tables when there is none).
* Heads: one linear projection per other modality (relation, attribute, ...).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmea_lightning.models.encoders.feature_head import FeatureHead
from mmea_lightning.models.encoders.gat import GATEncoder

__all__ = ["SeedTuningModel"]


class SeedTuningModel(nn.Module):
    """``() -> {"graph": (N, dim), m: (N, dim) for m in heads}``.

    Args:
        graph_input: ``(N, d_0)`` the table under the GAT (rows L2-normalised, zero rows without a real value).
        heads: ``{modality: (N, d_m)}`` tables with their own linear head (insertion order kept).
        edge_index: ``(2, E)`` long, the graph of both KGs (global entity ids).
        dim: embedding width.
        gat_layers / gat_heads: the GAT's depth and heads.

    Parameters are initialised in a fixed order (graph input head, GAT, then the heads in order), so a seeded
    caller gets the same model every time.
    """

    def __init__(self, graph_input: Tensor, heads: Mapping[str, Tensor], edge_index: Tensor, dim: int = 300,
                 gat_layers: int = 2, gat_heads: int = 2):
        super().__init__()
        self.graph_input = FeatureHead(graph_input, dim)
        self.gat = GATEncoder(dim, num_layers=gat_layers, heads=gat_heads)
        self.heads = nn.ModuleDict({m: FeatureHead(table, dim) for m, table in heads.items()})
        self.register_buffer("edge_index", torch.as_tensor(edge_index).clone(), persistent=False)

    def forward(self) -> dict[str, Tensor]:
        out = {"graph": self.gat(self.graph_input(), self.edge_index)}
        out.update({m: head() for m, head in self.heads.items()})
        return out
