"""Gold seeds: the training share of the gold links."""

from __future__ import annotations

import numpy as np

from mmea_lightning.data.pair import KGPair
from mmea_lightning.data.splits import LinkSplit


class GoldSeeds:
    """Serve the training share of the split as the seed links (the supervised setting)."""

    name = "gold"
    supervised = True

    def __call__(self, pair: KGPair, split: LinkSplit) -> np.ndarray:
        """``(S, 2)`` seed links ``kg1_id, kg2_id``."""
        return split.train
