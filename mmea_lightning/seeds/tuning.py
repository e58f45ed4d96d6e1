"""PSQE Stage II's contrastive fine-tuning model (paper Eq. 5-6).

``H^v = GAT(linear(h^v))``, ``H^a = linear(h^a)``, ``H^r = linear(h^r)``, trained with
``ICL(H^v) + ICL(H^a) + ICL(H^r)`` on the Stage-I seeds (the shared :class:`ICLLoss`).

Choices:

* The GAT input ("graph view") is the projected primary modality (images; names in the "with surface" setting when
  there are no images). Without any primary modality the released code drops the GAT altogether; we keep the graph
  view over the projected concatenation of the other modality tables (relation, attribute, ...), so that the graph
  structure still propagates evidence -- every run has a graph view, weighted like the visual one (0.8).
* With the ``numeric_value`` view in the primary slot (no images, no names), the GAT input is the ``numeric``
  table (per-attribute z-scores): the value tokens are a sparse vocabulary of thousands of columns, the z-scores
  carry the same values densely, and the linear head learns the attribute correspondence from the seeds.
* Inputs are the raw tables with L2-normalised rows (zero rows for entities without a real value), as in the
  fused raw features. The paper's relation/attribute inputs are BERT embeddings of relation/attribute names; ours are
  the framework's bag-of-words tables.
* GAT: the framework's diagonal multi-head GAT (2 layers, 2 heads, 300-d as the released code).
* ICL: temperature 0.1 on L2-normalised embeddings (the shared loss); the released code uses temperature 1 on
  unnormalised ones. Batches of ``batch_size`` seed pairs, losses summed, one AdamW step per epoch (as released).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.models.encoders.feature_head import FeatureHead
from mmea_lightning.models.encoders.gat import GATEncoder
from mmea_lightning.models.losses.icl import ICLLoss
from mmea_lightning.seeds.numeric_values import NUMERIC_VALUE

log = logging.getLogger(__name__)

__all__ = ["SeedTuningModel", "build_tuning_model", "dense_table", "fit_tuning_model"]


def dense_table(features: FeatureSet, name: str) -> Tensor:
    """``(N, d)`` float32: the modality's table, rows L2-normalised, zero where the entity has no real value.

    ``numeric_value`` reads the ``numeric`` table (see the module docstring)."""
    if name == NUMERIC_VALUE:
        name = "numeric"
    x = features.modalities[name].float()
    mask = features.masks.get(name)
    if mask is not None:
        x = x * mask.to(x.dtype).unsqueeze(1)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class SeedTuningModel(nn.Module):
    """``() -> {"graph": (N, dim), m: (N, dim) for m in head modalities}``.

    Args:
        features: the pair's :class:`FeatureSet` (tables and ``edge_index``).
        primary: the modality under the GAT, or ``None`` (then the concatenation of the ``heads`` tables).
        heads: modalities with their own linear head (relation, attribute, ...).
        dim: embedding width.
        gat_layers / gat_heads: the GAT's depth and heads.
    """

    def __init__(self, features: FeatureSet, primary: str | None, heads: Sequence[str], dim: int = 300,
                 gat_layers: int = 2, gat_heads: int = 2):
        super().__init__()
        if primary is None and not heads:
            raise ValueError("the Stage-II model needs a primary modality or at least one head modality")
        graph_input = (dense_table(features, primary) if primary is not None
                       else torch.cat([dense_table(features, m) for m in heads], dim=1))
        self.graph_input = FeatureHead(graph_input, dim)
        self.gat = GATEncoder(dim, num_layers=gat_layers, heads=gat_heads)
        self.heads = nn.ModuleDict({m: FeatureHead(dense_table(features, m), dim) for m in heads})
        self.register_buffer("edge_index", features.edge_index.clone(), persistent=False)

    def forward(self) -> dict[str, Tensor]:
        out = {"graph": self.gat(self.graph_input(), self.edge_index)}
        out.update({m: head() for m, head in self.heads.items()})
        return out


def fit_tuning_model(model: SeedTuningModel, links: Tensor, epochs: int, lr: float, batch_size: int,
                     temperature: float, seed: int) -> list[float]:
    """Train ``model`` on ``links (S, 2)`` for ``epochs`` (one AdamW step per epoch) -> the loss per epoch."""
    icl = ICLLoss(temperature, chunk_size=batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        order = links[torch.randperm(len(links), generator=generator)]
        out = model()
        loss = sum(icl(emb, order) for emb in out.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if (epoch + 1) % max(1, epochs // 6) == 0 or epoch + 1 == epochs:
            log.info("stage II fine-tuning: epoch %d/%d, loss %.4f, %.2f s/epoch", epoch + 1, epochs, losses[-1],
                     (time.perf_counter() - start) / (epoch + 1))
    model.eval()
    return losses


def build_tuning_model(features: FeatureSet, primary: str | None, heads: Sequence[str], settings: Mapping,
                       seed: int) -> SeedTuningModel:
    """A freshly initialised :class:`SeedTuningModel` (initialisation drawn from ``seed``, global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SeedTuningModel(features, primary, heads, dim=settings["dim"], gat_layers=settings["gat_layers"],
                               gat_heads=settings["gat_heads"])
