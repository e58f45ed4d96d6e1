"""``seeds=pivot``: EVA's unsupervised visual pivoting (UVP; PSQE appendix A.1), for any one modality.

Cosine similarity of one modality's features between every KG1 and every KG2 entity; the most similar pairs are
taken greedily one-to-one (a taken entity's other pairs are excluded) until ``n`` pairs are collected.

The modality is the first of ``modalities`` that the data has: images (as EVA), else -- when there are no images
(no ``pkls/`` folder) -- sentence embeddings of the names (``name_sbert``), else character bigrams (``name_char``).
Names count only in the "with surface" setting (``surface=true``). Choices: only entities with a real value of the
modality take part (the random stand-ins of entities without an image are not evidence), a pair needs a positive
similarity, and only the feature columns both graphs use count (see :mod:`mmea_lightning.seeds.fusion`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.seeds.base import SeedGeneration, UnsupervisedSeeds
from mmea_lightning.seeds.cache import features_fingerprint, stage_key
from mmea_lightning.seeds.fusion import DEFAULT_PRIMARY, FusedFeatures, comparable_view, pick_primary
from mmea_lightning.seeds.matching import greedy_matching, shuffled

__all__ = ["PivotSeeds"]


class PivotSeeds(UnsupervisedSeeds):
    """Greedy one-to-one pivots on one modality's cosine similarity.

    Args:
        modalities: preference order; the first the data has (and the setting allows) is used.
        n: number of pivot pairs.
        surface: the "with surface" setting (names may be used).
        test_links / cache: see :class:`UnsupervisedSeeds`.
        seed: draws the random order that breaks similarity ties (never the entity ids).
        candidates / chunk_size: candidate columns per row and rows per chunk of the matching.
    """

    name = "pivot"

    def __init__(self, modalities: Sequence[str] = DEFAULT_PRIMARY, n: int = 1000, surface: bool = False,
                 test_links: str = "split", cache: bool = True, seed: int = 0, candidates: int = 32,
                 chunk_size: int = 1024):
        super().__init__(test_links=test_links, cache=cache)
        if n < 1:
            raise ValueError(f"seeds.n={n}: the number of pivots must be positive")
        self.modalities = list(modalities)
        self.n = int(n)
        self.surface = surface
        self.seed = seed
        self.candidates = candidates
        self.chunk_size = chunk_size

    def pick_modality(self, features: FeatureSet) -> str:
        modality = pick_primary(features, self.modalities, self.surface)
        if modality is None:
            present = sorted(features.modalities)
            names = [m for m in present if m.startswith("name")]
            hint = (f" The data has {names}, but names count only with surface=true." if names and not self.surface
                    else "")
            raise ValueError(
                f"seeds=pivot needs one of {self.modalities}; the data has {present}.{hint} Pass surface=true "
                "(names), image features (<data_dir>/pkls), or pick a modality with seeds.modalities=[...]."
            )
        return modality

    def generate(self, features: FeatureSet, cache_dir: str | Path | None = None) -> SeedGeneration:
        modality = self.pick_modality(features)
        mask = features.masks.get(modality)
        settings = {"modality": modality, "n": self.n, "seed": self.seed, "candidates": self.candidates}
        key = stage_key("pivot", features_fingerprint(features), settings)

        def compute() -> tuple[np.ndarray, dict, dict]:
            view = comparable_view(features, modality, 1.0)
            if view is None:
                raise ValueError(f"seeds=pivot: no column of the {modality!r} features is used by both graphs, so "
                                 "it cannot compare entities across them; pick another modality.")
            left, right = features.kg1_ids.numpy(), features.kg2_ids.numpy()
            if mask is not None:
                left, right = left[mask.numpy()[left]], right[mask.numpy()[right]]
            rng = np.random.default_rng(self.seed)
            left, right = shuffled(left, rng), shuffled(right, rng)
            pairs, scores = greedy_matching(FusedFeatures([view]).scorer(left, right), len(left), len(right),
                                            limit=self.n, min_score=0.0, k=self.candidates,
                                            chunk_size=self.chunk_size)
            links = np.stack([left[pairs[:, 0].numpy()], right[pairs[:, 1].numpy()]], axis=1)
            info = {"modality": modality, "n": self.n, "score_max": _score(scores, 0), "score_min": _score(scores, -1)}
            return links, {}, info

        stage, _ = self.run_stage(self._stage_cache(cache_dir), "pivot", key, features, compute)
        return SeedGeneration(self.name, [stage], {"modality": modality, "surface": self.surface})


def _score(scores: torch.Tensor, index: int) -> float | None:
    return float(scores[index]) if len(scores) else None
