"""Entity-alignment evaluation protocols: every protocol's ranks from shared similarity blocks
(:func:`~mmea_lightning.eval.shared_ranking.protocol_ranks`), or each protocol on its own with
:func:`~mmea_lightning.eval.ranking.rank_targets` (``shared=False``: the reference the shared path is tested
against)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .ranking import rank_metrics, rank_targets
from .shared_ranking import PROTOCOL_SPECS, protocol_ranks

__all__ = ["PROTOCOLS", "evaluate_alignment"]

PROTOCOLS: tuple[str, ...] = tuple(PROTOCOL_SPECS)


def _check_ids(ids: Tensor, name: str, num_entities: int) -> Tensor:
    if not isinstance(ids, Tensor) or ids.dtype.is_floating_point or ids.dtype.is_complex:
        raise ValueError(f"{name} must be an integer tensor, got {getattr(ids, 'dtype', type(ids))}")
    if ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype torch.bool")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_entities):
        raise ValueError(
            f"{name} must be entity ids in [0, {num_entities}) (rows of embeddings), got values in "
            f"[{int(ids.min())}, {int(ids.max())}]"
        )
    return ids.long()


def _positions(ids: Tensor, num_entities: int, name: str) -> Tensor:
    """Lookup table ``(N,)``: global entity id -> position in ``ids`` (``-1`` if absent)."""
    if ids.dim() != 1 or ids.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor of entity ids, got shape {tuple(ids.shape)}")
    table = torch.full((num_entities,), -1, dtype=torch.long, device=ids.device)
    table[ids] = torch.arange(ids.numel(), device=ids.device)
    if int((table >= 0).sum()) != ids.numel():
        raise ValueError(f"{name} contains duplicate entity ids")
    return table


def _lookup(table: Tensor, ids: Tensor, list_name: str, column: str) -> Tensor:
    pos = table[ids]
    missing = pos < 0
    if bool(missing.any()):
        bad = ids[missing].unique()
        raise ValueError(
            f"{int(missing.sum())} link(s) have a {column} entity that is not in {list_name}, "
            f"e.g. ids {bad[:5].tolist()}; check that links and {list_name} describe the same graphs"
        )
    return pos


@torch.no_grad()
def evaluate_alignment(
    embeddings: Tensor,
    links: Tensor,
    kg1_ids: Tensor,
    kg2_ids: Tensor,
    *,
    prefix: str = "test",
    protocols: Sequence[str] = PROTOCOLS,
    csls_k: int = 3,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
    shared: bool = True,
) -> dict[str, float]:
    """Rank the gold counterpart of every linked entity under several protocols.

    Protocols (output key prefix in brackets):

    * ``standard`` (``{prefix}/``): queries ``links[:, 0]``, candidates the linked kg2 entities.
    * ``r2l`` (``{prefix}_r2l/``): queries ``links[:, 1]``, candidates the linked kg1 entities.
    * ``all`` (``{prefix}_all/``): queries ``links[:, 0]``, candidates all of ``kg2_ids``.
    * ``all_r2l`` (``{prefix}_all_r2l/``): queries ``links[:, 1]``, candidates all of ``kg1_ids``.
    * ``csls`` / ``csls_r2l`` (``{prefix}_csls/``, ``{prefix}_csls_r2l/``): ``standard`` / ``r2l``
      re-scored with CSLS (``csls_k`` neighbours).

    Linked candidates are de-duplicated, so a kg2 entity appearing in several links is one candidate.

    Args:
        embeddings: ``(N, d)`` embeddings of all entities of both graphs, indexed by global id.
        links: ``(L, 2)`` long gold pairs ``(kg1_id, kg2_id)`` to evaluate.
        kg1_ids: ``(N1,)`` long, all entity ids of the first graph.
        kg2_ids: ``(N2,)`` long, all entity ids of the second graph.
        prefix: name of the split, used as key prefix.
        protocols: protocols to run, a subset of :data:`PROTOCOLS`.
        csls_k: CSLS neighbourhood size for the ``csls*`` protocols.
        ks: cut-offs for ``hits@k``.
        chunk_size: at most this many queries scored at once.
        shared: compute every similarity once and share it between the protocols and both directions
            (:func:`~mmea_lightning.eval.shared_ranking.protocol_ranks`); ``False`` ranks each protocol on its own
            with :func:`~mmea_lightning.eval.ranking.rank_targets` (same ranks, several times the work).

    Returns:
        ``{"{prefix}/hits@1": ..., "{prefix}/mrr": ..., "{prefix}_r2l/mr": ..., ...,
        "{prefix}/num_queries": L}`` as plain Python floats.
    """
    if isinstance(protocols, str):
        protocols = (protocols,)
    unknown = [p for p in protocols if p not in PROTOCOL_SPECS]
    if unknown:
        raise ValueError(f"unknown evaluation protocol(s) {unknown}; valid protocols are {list(PROTOCOLS)}")
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
        shape = tuple(getattr(embeddings, "shape", ()))
        raise ValueError(f"embeddings must have shape (N, d), got shape {shape}")
    if not isinstance(links, Tensor) or links.dim() != 2 or links.size(1) != 2:
        shape = tuple(getattr(links, "shape", ()))
        raise ValueError(f"links must have shape (L, 2), got shape {shape}")
    if links.size(0) == 0:
        raise ValueError(f"the '{prefix}' split is empty: no links to evaluate")
    num_entities, device = embeddings.size(0), embeddings.device
    links = _check_ids(links, "links", num_entities).to(device)
    kg1_ids = _check_ids(kg1_ids, "kg1_ids", num_entities).to(device)
    kg2_ids = _check_ids(kg2_ids, "kg2_ids", num_entities).to(device)
    left, right = links[:, 0], links[:, 1]
    pos1 = _lookup(_positions(kg1_ids, num_entities, "kg1_ids"), left, "kg1_ids", "left (kg1)")
    pos2 = _lookup(_positions(kg2_ids, num_entities, "kg2_ids"), right, "kg2_ids", "right (kg2)")

    if shared:
        all_ranks = protocol_ranks(embeddings, links, kg1_ids, kg2_ids, protocols, csls_k=csls_k,
                                   chunk_size=chunk_size)
    else:
        all_ranks = {name: _ranks_on_its_own(name, embeddings, left, right, kg1_ids, kg2_ids, pos1, pos2, csls_k,
                                             chunk_size) for name in protocols}
    results: dict[str, float] = {}
    for name in protocols:
        key = prefix if name == "standard" else f"{prefix}_{name}"
        results.update({f"{key}/{metric}": value for metric, value in rank_metrics(all_ranks[name], ks).items()})
    results[f"{prefix}/num_queries"] = float(links.size(0))
    return results


def _ranks_on_its_own(name: str, embeddings: Tensor, left: Tensor, right: Tensor, kg1_ids: Tensor, kg2_ids: Tensor,
                      pos1: Tensor, pos2: Tensor, csls_k: int, chunk_size: int):
    """One protocol ranked with :func:`rank_targets` (its own similarity matrix)."""
    spec = PROTOCOL_SPECS[name]
    query_ids = right if spec.r2l else left
    if spec.whole_graph:
        candidate_ids, targets = (kg1_ids, pos1) if spec.r2l else (kg2_ids, pos2)
    else:
        candidate_ids, targets = torch.unique(left if spec.r2l else right, return_inverse=True)
    return rank_targets(embeddings[query_ids], embeddings[candidate_ids], targets,
                        csls_k=csls_k if spec.csls else 0, chunk_size=chunk_size)
