"""PSQE Stage II: contrastive fine-tuning, global sampling and multi-modal error correction (paper Sec. 4.2).

1. Fine-tune the Stage-II model (:mod:`~mmea_lightning.seeds.tuning`; the configured ``model`` factory, by default
   :class:`~mmea_lightning.models.encoders.seed_tuning.SeedTuningModel`) with the configured ``loss`` on the Stage-I
   seeds (Eq. 5-6).
2. Global sampling: the fused similarity of the tuned embeddings (graph view ``w_primary``, every head its own
   weight: 0.8 / 0.1 / 0.1; a head's row is zero for an entity without a value of its modality, see
   :mod:`~mmea_lightning.seeds.tuning`) between all KG1 and KG2 entities not yet in a seed; the ``new_pairs``
   (default ``n``) most similar are taken greedily one-to-one, across clusters.
3. Error correction (:func:`~mmea_lightning.seeds.correction.error_correction`) on the raw fused features over the
   union of the Stage-I seeds and the new pairs.

Choice: the released code re-samples after every one of its 300 epochs but keeps only the last epoch's sample; we
sample once, after training (the same result, 300 times cheaper).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.seeds.correction import error_correction, unchecked_pairs
from mmea_lightning.seeds.fusion import FusedFeatures, View
from mmea_lightning.seeds.matching import greedy_matching, shuffled
from mmea_lightning.seeds.tuning import (
    PairLoss,
    TuningModelFactory,
    build_tuning_model,
    describe_factory,
    fit_tuning_model,
    tuned_embeddings,
)

log = logging.getLogger(__name__)

__all__ = ["GlobalSampling", "tuned_fusion"]


def tuned_fusion(embeddings: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> FusedFeatures:
    """The fused similarity of the tuned embeddings: ``graph`` weighted by ``weights["primary"]``, every other
    embedding by its modality's weight (renormalised)."""
    views = []
    for name, emb in embeddings.items():
        weight = weights["primary"] if name == "graph" else weights[name]
        views.append(View(name, float(weight), torch.nn.functional.normalize(emb.detach().float(), dim=1)))
    return FusedFeatures(views)


class GlobalSampling:
    """Stage II.

    Args:
        model: the tuning model's factory (:class:`~mmea_lightning.seeds.tuning.TuningModelFactory`; the config
            passes :class:`~mmea_lightning.models.encoders.seed_tuning.SeedTuningModel` with 300-d, 2 GAT layers,
            2 heads).
        loss: builds the loss (``loss()`` -> :class:`~mmea_lightning.seeds.tuning.PairLoss`; the config passes
            :class:`~mmea_lightning.models.losses.icl.ICLLoss`, temperature 0.1, batches of 2000 seed pairs).
        epochs / lr: fine-tuning (300, 0.01 as published; AdamW, one step per epoch).
        new_pairs: pairs taken by global sampling (``None``: the seed budget ``n``).
        correction: run the error correction (``false``: the paper's "w/o MIC" ablation).
        candidates / chunk_size: greedy matching.

    The model and the loss enter the stage's cache key through :func:`~mmea_lightning.seeds.tuning.describe_factory`
    (the target and the keywords of a ``functools.partial``).
    """

    def __init__(self, model: TuningModelFactory, loss: Callable[[], PairLoss], epochs: int = 300, lr: float = 0.01,
                 new_pairs: int | None = None, correction: bool = True, candidates: int = 32,
                 chunk_size: int = 1024):
        for name, factory in (("model", model), ("loss", loss)):
            if not callable(factory):
                raise ValueError(f"seeds.global_sampling.{name} must be a factory (a class or a functools.partial: "
                                 f"'_partial_: true' in the config), got {type(factory).__name__}")
        self.model = model
        self.loss = loss
        self.epochs = epochs
        self.lr = lr
        self.new_pairs = new_pairs
        self.correction = correction
        self.candidates = candidates
        self.chunk_size = chunk_size

    def settings(self) -> dict:
        return {"model": describe_factory(self.model), "loss": describe_factory(self.loss), "epochs": self.epochs,
                "lr": self.lr, "new_pairs": self.new_pairs, "correction": self.correction,
                "candidates": self.candidates}

    def embed(self, features: FeatureSet, primary: str | None, heads: Sequence[str], state: Mapping | None,
              seed: int) -> dict[str, torch.Tensor]:
        """The tuned embeddings of a model with weights ``state`` (Stage III rebuilds them from the cache)."""
        model = build_tuning_model(self.model, features, primary, heads, seed)
        if state is not None:
            model.load_state_dict(state)
        return tuned_embeddings(model, features, heads)

    def run(self, features: FeatureSet, raw: FusedFeatures, primary: str | None, heads: Sequence[str],
            weights: Mapping[str, float], seeds: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, dict, dict]:
        """``(links, {"state_dict": ...}, report)`` of Stage II from the Stage-I ``seeds (S, 2)``."""
        if len(seeds) < 2:
            raise ValueError(f"stage II needs at least 2 Stage-I seeds to fine-tune on, got {len(seeds)}")
        model = build_tuning_model(self.model, features, primary, heads, seed)
        losses = fit_tuning_model(model, self.loss(), torch.as_tensor(seeds, dtype=torch.long), self.epochs,
                                  self.lr, seed)
        embeddings = tuned_embeddings(model, features, heads)
        tuned = tuned_fusion(embeddings, weights)
        used = np.zeros(features.num_entities, dtype=bool)
        used[seeds.ravel()] = True
        rng = np.random.default_rng(seed)  # ties in a random order, not by entity id
        left = shuffled(features.kg1_ids.numpy()[~used[features.kg1_ids.numpy()]], rng)
        right = shuffled(features.kg2_ids.numpy()[~used[features.kg2_ids.numpy()]], rng)
        limit = n if self.new_pairs is None else self.new_pairs
        pairs, _ = greedy_matching(tuned.scorer(left, right), len(left), len(right), limit=limit,
                                   k=self.candidates, chunk_size=self.chunk_size)
        new = np.stack([left[pairs[:, 0].numpy()], right[pairs[:, 1].numpy()]], axis=1)
        union = np.concatenate([seeds, new]).astype(np.int64)
        keep = error_correction(union, raw) if self.correction else np.ones(len(union), dtype=bool)
        info = {
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "sampled": len(new),
            "before_correction": len(union),
            "removed_by_correction": int((~keep).sum()),
            "removed_stage1_seeds": int((~keep[: len(seeds)]).sum()),
            "kept_unchecked": unchecked_pairs(union[keep], raw),  # no raw evidence: the correction cannot judge
            "tuned_weights": tuned.weights(),
        }
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return union[keep], {"state_dict": state}, info
