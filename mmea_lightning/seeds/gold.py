"""Gold seeds: the training share of the gold links (the supervised setting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.data.splits import split_links
from mmea_lightning.seeds.base import SeedGenerator, SeedSplit

__all__ = ["GoldSeeds"]


class GoldSeeds(SeedGenerator):
    """The gold links split into training, validation and test links with ``split_seed``
    (:func:`~mmea_lightning.data.splits.split_links`); the training share is the seed links."""

    name = "gold"
    supervised = True

    def split(self, features: FeatureSet, gold_links: np.ndarray, *, seed_ratio: float, val_ratio: float,
              split_seed: int, cache_dir: str | Path | None = None) -> SeedSplit:
        split = split_links(gold_links, seed_ratio, val_ratio, split_seed)
        return SeedSplit(split, {"mode": "supervised", "validation": "a val_ratio share of the gold training links"})
