"""PSQE's multi-modal information correction (MIC; paper Sec. 4.2.2, used again in Stage III's recheck).

For the seed pairs ``(l_k, r_k)``, ``M[k, k'] = sim(l_k, r_k')`` on the *raw* fused features (the Stage-I fusion, not
the fine-tuned ones); pair ``k`` is dropped when ``M[k, k] < max_k' M[k, k']``, i.e. when another seed's KG2 entity
is more similar to ``l_k`` than its own partner. The check runs left to right (KG1 -> KG2) over the whole seed set,
Stage-I seeds included: the paper defines ``M`` over the new pairs and speaks of their "conflict with Stage I", which
we read as the union (the released code's reading too); Stage II's report counts the Stage-I seeds it removes. A tie
with the row maximum keeps the pair -- so a pair without any raw evidence (a zero row: no image / name / shared
value) is never removed here; the report of Stage II/III counts the pairs it keeps that way.
"""

from __future__ import annotations

import numpy as np
import torch

from mmea_lightning.seeds.fusion import FusedFeatures
from mmea_lightning.similarity import row_chunks

__all__ = ["error_correction", "unchecked_pairs"]


@torch.no_grad()
def error_correction(links: np.ndarray, fused: FusedFeatures, chunk_size: int = 2048) -> np.ndarray:
    """``(S,)`` bool: which of the seed pairs ``links (S, 2)`` survive the check (see the module docstring)."""
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    keep = np.ones(len(links), dtype=bool)
    if len(links) == 0:
        return keep
    score_rows = fused.scorer(links[:, 0], links[:, 1])
    for chunk in row_chunks(len(links), chunk_size):
        rows = torch.arange(chunk.start, chunk.stop)
        sim = score_rows(rows)  # (c, S)
        own = sim[torch.arange(len(rows)), rows]
        keep[chunk] = (own >= sim.max(dim=1).values).numpy()
    return keep


def unchecked_pairs(links: np.ndarray, fused: FusedFeatures) -> int:
    """How many of ``links (S, 2)`` the correction cannot check: an entity without any raw evidence on either side."""
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    if len(links) == 0:
        return 0
    return int((~(fused.has_evidence(links[:, 0]) & fused.has_evidence(links[:, 1]))).sum())
