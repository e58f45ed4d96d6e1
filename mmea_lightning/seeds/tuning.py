"""PSQE Stage II's contrastive fine-tuning (paper Eq. 5-6): the inputs, the contract of the model, the training loop.

``H^v = GAT(linear(h^v))``, ``H^a = linear(h^a)``, ``H^r = linear(h^r)``, trained with
``ICL(H^v) + ICL(H^a) + ICL(H^r)`` on the Stage-I seeds.

The seed generators sit below the models in the package (``docs/architecture.md``), so this module does not import
them: the model and the loss are *factories* handed in by the configuration (``conf/seeds/psqe.yaml``:
:class:`~mmea_lightning.models.encoders.seed_tuning.SeedTuningModel` and the shared
:class:`~mmea_lightning.models.losses.icl.ICLLoss`, both ``_partial_: true``); this module prepares their inputs,
seeds their initialisation and trains them. The contracts are :class:`TuningModelFactory` and :class:`PairLoss`.

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
* Missing values: a head embeds an entity without a value of its modality (a zero input row) as its bias vector, the
  same vector for every such entity, so in that view any two of them would score a perfect cosine of 1. The paper
  does not consider missing modalities; we give such an entity a zero row in the head's tuned embedding
  (:func:`tuned_embeddings`), as the raw fusion does: no evidence in that view, not perfect evidence. It matters on
  DBP15K, whose attribute files cover only the 15,000 aligned entities per side: with the bias vectors, Stage II's
  global sampling preferred pairs of two attribute-less (hence unaligned) entities. Training is unchanged.
* ICL: temperature 0.1 on L2-normalised embeddings (the shared loss); the released code uses temperature 1 on
  unnormalised ones. Batches of ``chunk_size`` (2000) seed pairs, losses summed, one AdamW step per epoch (as
  released).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.seeds.numeric_values import NUMERIC_VALUE

log = logging.getLogger(__name__)

__all__ = ["PairLoss", "TuningModelFactory", "build_tuning_model", "dense_table", "describe_factory",
           "fit_tuning_model", "has_value", "tuned_embeddings"]


class TuningModelFactory(Protocol):
    """Builds Stage II's model from its inputs (called under a fixed seed, so its initialisation is reproducible).

    Args:
        graph_input: ``(N, d_0)`` float32, the table under the graph encoder (see :func:`build_tuning_model`).
        heads: ``{modality: (N, d_m)}`` float32 tables, one embedding each.
        edge_index: ``(2, E)`` long, the graph of both KGs (global entity ids).

    Returns:
        An ``nn.Module`` whose call ``model()`` gives ``{"graph": (N, dim), m: (N, dim) for m in heads}``.
    """

    def __call__(self, graph_input: Tensor, heads: Mapping[str, Tensor], edge_index: Tensor) -> nn.Module: ...


class PairLoss(Protocol):
    """``(embeddings (N, d), links (S, 2) long) -> ()`` scalar loss pulling the linked rows together."""

    def __call__(self, embeddings: Tensor, links: Tensor) -> Tensor: ...


def describe_factory(factory: Callable) -> dict:
    """What a factory builds, for the stage cache key and the report: ``{"target": "module.Qualname", **keywords}``
    of a ``functools.partial`` (what ``_partial_: true`` gives), else the callable's own name."""
    keywords: dict = {}
    if isinstance(factory, functools.partial):
        keywords = {k: v for k, v in factory.keywords.items()}
        if factory.args:
            keywords["args"] = list(factory.args)
        factory = factory.func
    name = getattr(factory, "__qualname__", type(factory).__qualname__)
    return {"target": f"{getattr(factory, '__module__', '')}.{name}", **keywords}


def _table_name(name: str) -> str:
    """The feature table a modality reads: ``numeric_value`` reads the ``numeric`` table (see the module docstring)."""
    return "numeric" if name == NUMERIC_VALUE else name


def has_value(features: FeatureSet, name: str) -> Tensor:
    """``(N,)`` bool: the entity has a real value of the modality (a non-zero row, not masked out): exactly the
    non-zero rows of :func:`dense_table`."""
    name = _table_name(name)
    present = (features.modalities[name] != 0).any(dim=1)
    mask = features.masks.get(name)
    return present if mask is None else present & mask.to(torch.bool)


def dense_table(features: FeatureSet, name: str) -> Tensor:
    """``(N, d)`` float32: the modality's table, rows L2-normalised, zero where the entity has no real value
    (:func:`has_value`)."""
    x = features.modalities[_table_name(name)].float()
    x = x * has_value(features, name).to(x.dtype).unsqueeze(1)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def build_tuning_model(factory: TuningModelFactory, features: FeatureSet, primary: str | None, heads: Sequence[str],
                       seed: int) -> nn.Module:
    """A freshly initialised Stage-II model from ``factory`` (initialisation drawn from ``seed``, global RNG
    untouched): the graph input is ``primary``'s table, or the concatenation of the ``heads`` tables without one."""
    if primary is None and not heads:
        raise ValueError("the Stage-II model needs a primary modality or at least one head modality")
    graph_input = (dense_table(features, primary) if primary is not None
                   else torch.cat([dense_table(features, m) for m in heads], dim=1))
    tables = {m: dense_table(features, m) for m in heads}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(graph_input, tables, features.edge_index)


def tuned_embeddings(model: nn.Module, features: FeatureSet, heads: Sequence[str]) -> dict[str, Tensor]:
    """``{"graph": (N, dim), m: (N, dim) for m in heads}``: the trained model's embeddings (no gradient), each head's
    rows zero for the entities without a value of its modality (their input row is zero: see the module docstring,
    "Missing values")."""
    model.eval()
    with torch.no_grad():
        out = dict(model())
    for m in heads:
        missing = ~has_value(features, m)
        if bool(missing.any()):
            out[m] = out[m].masked_fill(missing.to(out[m].device)[:, None], 0.0)
    return out


def fit_tuning_model(model: nn.Module, loss_fn: PairLoss, links: Tensor, epochs: int, lr: float,
                     seed: int) -> list[float]:
    """Train ``model`` on ``links (S, 2)`` for ``epochs`` (one AdamW step per epoch, the loss summed over the model's
    outputs, the links in a fresh seeded order every epoch) -> the loss per epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        order = links[torch.randperm(len(links), generator=generator)]
        out = model()
        loss = sum(loss_fn(emb, order) for emb in out.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if (epoch + 1) % max(1, epochs // 6) == 0 or epoch + 1 == epochs:
            log.info("stage II fine-tuning: epoch %d/%d, loss %.4f, %.2f s/epoch", epoch + 1, epochs, losses[-1],
                     (time.perf_counter() - start) / (epoch + 1))
    model.eval()
    return losses
