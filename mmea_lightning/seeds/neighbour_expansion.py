"""PSQE Stage III: neighbourhood expansion above a threshold eta, then the recheck (paper Sec. 4.3).

For every Stage-II seed pair ``(a, b)`` (in seed order) the neighbour pairs ``N(a) x N(b)`` whose two entities are
not yet in a seed are scored with Eq. 7, ``(h (+) H)_1^T (h (+) H)_2``: per modality slot, the raw table and the
tuned embedding side by side (each L2-normalised, so the slot's similarity is the mean of the raw and the tuned
cosine), slots weighted as in Stage I (primary / graph 0.8, relation 0.1, attribute 0.1; renormalised). Pairs
scoring above eta are added greedily one-to-one, at most ``per_pair`` of them per seed pair. The enlarged set then
goes through the same error correction as Stage II (the recheck).

Without images the released code's Stage III does nothing (it loops over the image neighbourhoods only). Here the
graph view of the tuned model always exists (see :mod:`mmea_lightning.seeds.tuning`), so Stage III runs on any data:
the primary slot is ``[raw primary, tuned graph view]`` when a primary modality exists (images, or names with
surface) and the tuned graph view alone otherwise.

Schedule (the released code; the paper only says "initially 0.8"): for the ``i``-th of ``S`` seed pairs,
``eta = eta_start + (eta_end - eta_start) i / S`` (0.8 -> 0.9) and ``per_pair = int(per_pair_start -
(per_pair_start - per_pair_end) i / S)`` (6 -> 3): the most trusted seeds (Stage I first, then Stage II's in
decreasing similarity) expand most.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.seeds.correction import error_correction, unchecked_pairs
from mmea_lightning.seeds.fusion import FusedFeatures, View
from mmea_lightning.seeds.matching import greedy_matching, shuffled

log = logging.getLogger(__name__)

__all__ = ["NeighbourExpansion", "expansion_fusion", "neighbour_lists"]


def neighbour_lists(edge_index: torch.Tensor, num_entities: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(ptr (N + 1), neighbours (E,))`` of the undirected graph ``edge_index (2, E)`` (both directions)."""
    src, dst = edge_index.numpy()
    order = np.argsort(src, kind="stable")
    ptr = np.zeros(num_entities + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=num_entities), out=ptr[1:])
    return ptr, dst[order]


def expansion_fusion(raw: FusedFeatures, primary: str | None, embeddings: Mapping[str, torch.Tensor],
                     weights: Mapping[str, float]) -> FusedFeatures:
    """Eq. 7's fusion: per slot, the raw view and the tuned embedding, each with half of the slot's weight."""
    raw_views = {v.name: v for v in raw.views}
    views = []
    for name, emb in embeddings.items():
        slot_weight = float(weights["primary"] if name == "graph" else weights[name])
        raw_name = primary if name == "graph" else name
        tuned = View(f"{name}_tuned", slot_weight, torch.nn.functional.normalize(emb.detach().float(), dim=1))
        if raw_name is not None and raw_name in raw_views:
            views += [View(raw_name, slot_weight / 2, raw_views[raw_name].table),
                      View(tuned.name, slot_weight / 2, tuned.table)]
        else:
            views.append(tuned)
    return FusedFeatures(views)


class NeighbourExpansion:
    """Stage III.

    Args:
        eta_start / eta_end: the similarity threshold over the seed order (0.8 -> 0.9).
        per_pair_start / per_pair_end: new pairs per seed pair over the seed order (6 -> 3).
        correction: run the recheck (``false``: "w/o MIC").
        candidates: greedy matching candidates per row.
    """

    def __init__(self, eta_start: float = 0.8, eta_end: float = 0.9, per_pair_start: int = 6, per_pair_end: int = 3,
                 correction: bool = True, candidates: int = 32):
        if per_pair_start < 1 or per_pair_end < 1:
            raise ValueError("neighbour_expansion.per_pair_start/per_pair_end must be >= 1")
        self.eta_start = eta_start
        self.eta_end = eta_end
        self.per_pair_start = per_pair_start
        self.per_pair_end = per_pair_end
        self.correction = correction
        self.candidates = candidates

    def settings(self) -> dict:
        return {"eta_start": self.eta_start, "eta_end": self.eta_end, "per_pair_start": self.per_pair_start,
                "per_pair_end": self.per_pair_end, "correction": self.correction, "candidates": self.candidates}

    def schedule(self, index: int, total: int) -> tuple[float, int]:
        """``(eta, per_pair)`` of the ``index``-th of ``total`` seed pairs."""
        frac = index / max(total, 1)
        eta = self.eta_start + (self.eta_end - self.eta_start) * frac
        per_pair = int(self.per_pair_start - (self.per_pair_start - self.per_pair_end) * frac)
        return eta, max(per_pair, 1)

    def run(self, features: FeatureSet, raw: FusedFeatures, fused: FusedFeatures, seeds: np.ndarray,
            seed: int = 0) -> tuple[np.ndarray, dict]:
        """``(links, report)``: ``seeds (S, 2)`` expanded through their neighbourhoods with the Eq.-7 ``fused``
        similarity, then rechecked on the ``raw`` fused features. ``seed`` orders the candidates at random, so
        that similarity ties are not broken by entity id."""
        ptr, neighbours = neighbour_lists(features.edge_index, features.num_entities)
        rng = np.random.default_rng(seed)
        used = np.zeros(features.num_entities, dtype=bool)
        used[seeds.ravel()] = True
        added: list[np.ndarray] = []
        expanded = 0
        for i, (a, b) in enumerate(seeds.tolist()):
            left = neighbours[ptr[a]:ptr[a + 1]]
            right = neighbours[ptr[b]:ptr[b + 1]]
            left, right = shuffled(np.unique(left[~used[left]]), rng), shuffled(np.unique(right[~used[right]]), rng)
            if len(left) == 0 or len(right) == 0:
                continue
            eta, per_pair = self.schedule(i, len(seeds))
            pairs, _ = greedy_matching(fused.scorer(left, right), len(left), len(right), limit=per_pair,
                                       min_score=eta, k=self.candidates)
            if len(pairs) == 0:
                continue
            new = np.stack([left[pairs[:, 0].numpy()], right[pairs[:, 1].numpy()]], axis=1)
            used[new.ravel()] = True
            added.append(new)
            expanded += 1
        new = np.concatenate(added) if added else np.zeros((0, 2), dtype=np.int64)
        union = np.concatenate([seeds, new]).astype(np.int64)
        keep = error_correction(union, raw) if self.correction else np.ones(len(union), dtype=bool)
        info = {
            "added": len(new),
            "seed_pairs_expanded": expanded,
            "before_correction": len(union),
            "removed_by_correction": int((~keep).sum()),
            "removed_added": int((~keep[len(seeds):]).sum()),
            "kept_unchecked": unchecked_pairs(union[keep], raw),  # no raw evidence: the correction cannot judge
            "fusion_weights": fused.weights(),
        }
        return union[keep], info
