"""How the seed generators pick pairs: the shared greedy matcher, on entities in a seeded random order.

Every seed generator picks pairs the same way: repeatedly take the most similar remaining pair whose two entities
are both still free (EVA's visual pivoting, PSQE's cluster and global sampling, the neighbourhood expansion). That is
:func:`mmea_lightning.similarity.greedy_matching`, the one greedy matcher of the package (the one-to-one decoder of
the evaluation uses it too): it asks a ``score_rows`` function for chunks of rows, so the ~19k x 19.5k entity pairs
of a DBP15K pair are never held as one dense matrix, and the generators only need their first ~1000 picks.

Ties are broken by position, so callers pass their entities in a seeded random order (:func:`shuffled`), never in id
order: in DBP15K the gold-linked entities have the lowest ids (KG1 ``0..10499`` are linked to KG2 ``10500..``), and
thousands of pairs tie at cosine 1.0 on translated names -- breaking those ties by id would favour gold links.
"""

from __future__ import annotations

import numpy as np

from mmea_lightning.similarity import greedy_matching

__all__ = ["greedy_matching", "shuffled"]


def shuffled(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``ids`` in a random order drawn from ``rng`` (so that score ties are not broken by entity id)."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids[rng.permutation(len(ids))]
