"""Weighted multi-modal similarity of the seed generators (PSQE Eq. 4, and the one-modality pivots).

A :class:`FusedFeatures` holds per-modality *views*: a table ``(N, d_m)`` whose rows are L2-normalised (an entity
without a real value of the modality -- no image, no name -- has a zero row, i.e. no evidence: the random stand-in
vectors the aligners get are not evidence of anything) and a weight ``w_m``. The fused similarity of two entities is

    sim(a, b) = sum_m w_m cos_m(a, b),        with the weights of the views present renormalised to sum 1,

which is the inner product of the concatenations ``[sqrt(w_m) x_m]`` (used for k-means). Choices:

* The paper concatenates ``h = h^v (+) h^a (+) h^r`` with weights 0.8 / 0.1 / 0.1; the released code multiplies each
  block by its weight, so its inner products weight the modalities by ``w^2`` (0.64 / 0.01 / 0.01). We weight the
  similarity by ``w`` itself (the blocks by ``sqrt(w)``), so the published weights are the shares of the similarity
  the paper's text describes, and thresholds (Stage III's eta) keep their meaning on the cosine scale ``[-1, 1]``.
* Weights are renormalised over the modalities the data has, so a missing one (no images in any benchmark here)
  does not shrink every similarity.
* The "primary" slot (the paper's visual modality, weight 0.8) is taken by the first modality of a preference list
  that the data has: images, else name embeddings, else character bigrams, else the raw numeric values
  (``numeric_value``, :mod:`mmea_lightning.seeds.numeric_values`: the only cross-graph evidence of the MMKG pairs
  here without images and names). Names count only in the "with surface" setting (``surface=true``), so that seeds
  never bring names into a run that reports itself as without surface.
* Raw features are compared across the graphs only on the feature columns both graphs use. The paper's relation and
  attribute features are BERT embeddings of relation/attribute *names*, comparable across graphs; ours are
  bag-of-words over relation ids and attribute keys. The two graphs of every benchmark pair here have disjoint
  relation ids, and the MMKG pairs disjoint attribute keys; DBP15K's two sides share part of their attribute keys
  (e.g. 4,376 keys on ZH-EN: property names such as ``birthDate`` are kept untranslated), so there the shared
  columns carry the attribute modality into the raw fusion with its 0.1 weight. A table without shared columns gives
  every KG1 x KG2 pair cosine 0 -- no evidence for ranking pairs -- while in k-means it only separates the graphs
  (clusters of one graph's entities, where no seed can be sampled). So a raw view keeps the columns used by
  entities of both graphs, and a modality without any shared column is left out of the raw fusion (recorded in the
  report); it still enters Stage II through its trained head,
  which learns the correspondence from the seeds.

Sparse bag-of-words tables (relation counts, attribute keys) stay scipy CSR; products are chunked by rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.data.modalities import SURFACE_MODALITIES
from mmea_lightning.seeds.numeric_values import NUMERIC_VALUE, has_numeric_values, numeric_value_table

log = logging.getLogger(__name__)

__all__ = ["FusedFeatures", "View", "comparable_view", "eligible_modalities", "normalized_table", "pick_primary",
           "raw_fusion", "shared_columns"]

DEFAULT_PRIMARY = ("image", "name_sbert", "name_char", NUMERIC_VALUE)
_SPARSE_BELOW = 0.05  # tables denser than this are kept dense


def shared_columns(table: Tensor, kg1_ids: Tensor, kg2_ids: Tensor, mask: Tensor | None = None) -> Tensor:
    """``(d',)`` indices of the columns of ``table (N, d)`` that are non-zero for some KG1 *and* some KG2 entity
    (among the entities ``mask (N,)`` marks as having a real value)."""
    x = table.detach().cpu()
    if mask is not None:
        x = x * mask.to(x.dtype).unsqueeze(1)
    used1 = (x[kg1_ids] != 0).any(dim=0)
    used2 = (x[kg2_ids] != 0).any(dim=0)
    return torch.nonzero(used1 & used2).flatten()


def normalized_table(table: Tensor, mask: Tensor | None = None,
                     columns: Tensor | None = None) -> Tensor | sp.csr_matrix:
    """Rows of ``table (N, d)`` (restricted to ``columns``) L2-normalised; rows where ``mask (N,)`` is false (no real
    value) set to zero.

    Returned as a float32 torch tensor, or as a scipy CSR matrix when fewer than 5% of the entries are non-zero.
    """
    x = table.detach().float().cpu()
    if columns is not None and len(columns) < x.shape[1]:
        x = x[:, columns]
    if mask is not None:
        x = x * mask.to(x.dtype).unsqueeze(1)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    density = float((x != 0).float().mean()) if x.numel() else 1.0
    if density < _SPARSE_BELOW:
        return sp.csr_matrix(x.numpy())
    return x.contiguous()


@dataclass(frozen=True)
class View:
    """One modality of a fused similarity: ``table (N, d)`` with normalised (or zero) rows, and its weight.

    (``numeric_value`` rows have norm <= 1: see :mod:`mmea_lightning.seeds.numeric_values`.)"""

    name: str
    weight: float
    table: Tensor | sp.csr_matrix

    def rows(self, ids: np.ndarray) -> Tensor | sp.csr_matrix:
        return self.table[ids] if isinstance(self.table, sp.csr_matrix) else self.table[torch.as_tensor(ids)]


def _right_side(x: Tensor | sp.csr_matrix) -> Tensor | sp.csc_matrix:
    """``(d, R)``: the transposed right-hand rows, sparse (CSC) when they are sparse with more than 1024 columns."""
    if isinstance(x, sp.csr_matrix) and x.shape[1] > 1024:
        return x.T.tocsc()
    return _dense(x).t().contiguous()


def _dense(x: Tensor | sp.csr_matrix) -> Tensor:
    return torch.from_numpy(x.toarray()) if isinstance(x, sp.csr_matrix) else x


class FusedFeatures:
    """``sim(a, b) = sum_m w_m cos_m(a, b)`` over ``views`` (weights renormalised to sum 1; zero weights dropped)."""

    def __init__(self, views: Sequence[View]):
        views = [v for v in views if v.weight > 0]
        if not views:
            raise ValueError("a fused similarity needs at least one modality with a positive weight")
        total = sum(v.weight for v in views)
        self.views = [View(v.name, v.weight / total, v.table) for v in views]
        sizes = {v.table.shape[0] for v in self.views}
        if len(sizes) != 1:
            raise ValueError(f"the views of a fused similarity disagree on the number of entities: {sizes}")
        self.num_entities = sizes.pop()

    def weights(self) -> dict[str, float]:
        return {v.name: round(v.weight, 6) for v in self.views}

    def scorer(self, left: np.ndarray | Tensor, right: np.ndarray | Tensor) -> Callable[[Tensor], Tensor]:
        """``rows (c,) -> (c, R)`` fused similarities of ``left[rows]`` against every entity of ``right``.

        ``left (L,)`` / ``right (R,)`` are entity ids. The right side of every view is transposed once: densified
        (``R x d_m`` floats), or kept sparse when it is sparse and wide (the value tokens: thousands of columns).
        """
        left = np.asarray(left, dtype=np.int64)
        right = np.asarray(right, dtype=np.int64)
        right_t = [(_right_side(v.rows(right)), v) for v in self.views]

        def score_rows(rows: Tensor) -> Tensor:
            ids = left[np.asarray(rows, dtype=np.int64)]
            out = torch.zeros(len(ids), len(right))
            for rt, view in right_t:
                lhs = view.rows(ids)
                if isinstance(rt, sp.csc_matrix):  # sparse x sparse: only the right side's non-zeros are read
                    out += view.weight * torch.from_numpy((lhs @ rt).toarray().astype(np.float32))
                elif isinstance(lhs, sp.csr_matrix):
                    out += view.weight * torch.from_numpy(np.asarray(lhs @ rt.numpy(), dtype=np.float32))
                else:
                    out += view.weight * (lhs @ rt)
            return out

        return score_rows

    def has_evidence(self, ids: np.ndarray) -> np.ndarray:
        """``(len(ids),)`` bool: the entity has a non-zero row in some view (a real image / name / shared value)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros(len(ids), dtype=bool)
        for view in self.views:
            rows = view.rows(ids)
            out |= (np.diff(rows.indptr) > 0) if isinstance(rows, sp.csr_matrix) else (rows != 0).any(dim=1).numpy()
        return out

    def similarity(self, left: np.ndarray | Tensor, right: np.ndarray | Tensor) -> Tensor:
        """The dense ``(L, R)`` fused similarity (for small sets: the seed pairs of the error correction)."""
        left = np.asarray(left, dtype=np.int64)
        return self.scorer(left, right)(torch.arange(len(left)))

    def vectors(self) -> np.ndarray | sp.csr_matrix:
        """``(N, sum d_m)`` concatenation ``[sqrt(w_m) x_m]``: inner products are the fused similarities."""
        blocks = [v.table * np.sqrt(v.weight) if isinstance(v.table, sp.csr_matrix)
                  else (v.table * float(np.sqrt(v.weight))).numpy() for v in self.views]
        if any(isinstance(b, sp.csr_matrix) for b in blocks):
            return sp.hstack([sp.csr_matrix(b) for b in blocks], format="csr", dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)


def eligible_modalities(features: FeatureSet, surface: bool) -> list[str]:
    """Feature modalities of ``features`` a seed generator may read (the name modalities only with ``surface``),
    plus ``numeric_value`` when the data has raw numeric triples."""
    out = [m for m in features.modalities if surface or m not in SURFACE_MODALITIES]
    return out + [NUMERIC_VALUE] if has_numeric_values(features) else out


def pick_primary(features: FeatureSet, preference: Sequence[str], surface: bool) -> str | None:
    """The first modality of ``preference`` that the data has and the setting allows, else ``None``."""
    allowed = eligible_modalities(features, surface)
    return next((m for m in preference if m in allowed), None)


def comparable_view(features: FeatureSet, name: str, weight: float) -> View | None:
    """The raw view of modality ``name`` on the columns both graphs use, or ``None`` when they share none."""
    if name == NUMERIC_VALUE:
        table = numeric_value_table(features)
        return None if table is None else View(name, weight, table)
    table, mask = features.modalities[name], features.masks.get(name)
    columns = shared_columns(table, features.kg1_ids, features.kg2_ids, mask)
    if len(columns) == 0:
        return None
    return View(name, weight, normalized_table(table, mask, columns))


def raw_fusion(features: FeatureSet, primary: Sequence[str], weights: Mapping[str, float],
               surface: bool) -> tuple[FusedFeatures, str | None, dict[str, str]]:
    """PSQE's fused raw features (Eq. 4): the primary modality and the other weighted modalities the data has.

    ``weights`` maps ``"primary"`` and modality names (``relation``, ``attribute``, ``numeric``, ...) to weights.
    Returns the fusion, the modality that took the primary slot (``None`` when the data has none of ``primary``) and
    the weighted modalities left out of it, with the reason.
    """
    allowed = eligible_modalities(features, surface)
    chosen = pick_primary(features, primary, surface)
    views: list[View] = []
    left_out: dict[str, str] = {}
    candidates = [(chosen, float(weights.get("primary", 0)))] if chosen is not None else []
    for name, weight in weights.items():
        if name == "primary" or weight <= 0:
            continue
        if name in SURFACE_MODALITIES and not surface:
            raise ValueError(f"seeds weights name the surface modality {name!r} but surface=false; "
                             "set surface=true or drop it from the weights.")
        if name not in allowed:
            left_out[name] = "not in the data"
            continue
        if name != chosen:
            candidates.append((name, float(weight)))
    for name, weight in candidates:
        if weight <= 0:
            continue
        view = comparable_view(features, name, weight)
        if view is None:
            left_out[name] = "no feature column is used by both graphs (cosine 0 for every cross-graph pair)"
            continue
        views.append(view)
    if left_out:
        log.info("seed fusion: left out %s", left_out)
    if not views:
        raise ValueError(
            f"no modality compares entities across the two graphs: primary candidates {list(primary)} "
            f"(names count only with surface=true), weights {dict(weights)}, present {sorted(features.modalities)}, "
            f"left out {left_out}. Unsupervised seeds need images (<data_dir>/pkls), names (surface=true) or "
            "features with a vocabulary shared by the two graphs."
        )
    return FusedFeatures(views), chosen, left_out
