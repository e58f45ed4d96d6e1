"""Seed quality (PSQE Eq. 11): precision against the gold links (logging only) and graph coverage.

Graph coverage, as published::

    coverage = S_a / (2 G_n) + Edge / (2 G_Edge) + S_f / G_n

The paper does not define "aggregated" and "scattered" seed entities precisely; we choose, after its Fig. 4 / Remark 2
(seeds crowded in one region vs spread over the graph):

* seed entities: the entities of both graphs that occur in a seed pair (two per pair); ``G_n``: all entities of
  both graphs;
* aggregated (``S_a``): seed entities with at least one graph neighbour that is also a seed entity; scattered
  (``S_f``): seed entities with no seed neighbour. A scattered seed counts twice as much as an aggregated one, so
  the same number of seeds spread over the graph scores higher than seeds packed together;
* ``Edge``: undirected edges with at least one seed endpoint; ``G_Edge``: all undirected edges (no self-loops).

With every entity a seed, ``coverage = 1 + isolated / (2 G_n)`` (isolated entities have no neighbour and count as
scattered), i.e. 1 on graphs without isolated entities, as the paper states. The formula is not bounded by 1 in
general (many scattered seeds on a sparse graph can exceed it); the three parts are reported too.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["graph_coverage", "quality_table", "seed_precision"]


def seed_precision(links: np.ndarray, gold_links: np.ndarray) -> dict[str, float]:
    """``correct`` (pairs that are gold links) and ``precision`` = correct / #pairs of ``links (S, 2)``.

    Logging only: the seed generators never call this.
    """
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    gold = np.asarray(gold_links, dtype=np.int64).reshape(-1, 2)
    if len(links) == 0:
        return {"correct": 0, "precision": float("nan")}
    size = int(max(links.max(), gold.max() if len(gold) else 0)) + 1
    gold_keys = np.unique(gold[:, 0] * size + gold[:, 1])
    correct = int(np.isin(links[:, 0] * size + links[:, 1], gold_keys).sum())
    return {"correct": correct, "precision": correct / len(links)}


def graph_coverage(links: np.ndarray, edge_index: torch.Tensor | np.ndarray, num_entities: int) -> dict[str, float]:
    """Eq. 11 for the seed pairs ``links (S, 2)`` on the undirected graph ``edge_index (2, E)`` (both directions,
    no self-loops) over ``num_entities`` entities (both graphs). See the module docstring for the definitions."""
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    edges = np.asarray(edge_index, dtype=np.int64)
    is_seed = np.zeros(num_entities, dtype=bool)
    is_seed[links.ravel()] = True
    src, dst = edges[0], edges[1]
    both = is_seed[src] & is_seed[dst]
    aggregated = np.zeros(num_entities, dtype=bool)
    aggregated[src[both]] = True
    seeds = int(is_seed.sum())
    s_a = int((aggregated & is_seed).sum())
    s_f = seeds - s_a
    total_edges = edges.shape[1] // 2
    covered = int((is_seed[src] | is_seed[dst]).sum()) // 2
    edge_part = covered / (2 * total_edges) if total_edges else 0.0
    coverage = s_a / (2 * num_entities) + edge_part + s_f / num_entities
    return {
        "coverage": coverage,
        "seed_entities": seeds,
        "aggregated": s_a,
        "scattered": s_f,
        "edges_covered": covered,
        "edges_total": total_edges,
    }


def quality_table(rows: list[dict]) -> str:
    """A plain-text table of per-stage seed quality: one row per ``{dataset?, generator?, stage, count,
    precision, coverage, seconds}`` mapping (missing cells print as ``-``)."""
    columns = [("dataset", "<", "{}"), ("generator", "<", "{}"), ("stage", "<", "{}"), ("count", ">", "{:d}"),
               ("precision", ">", "{:.4f}"), ("coverage", ">", "{:.4f}"), ("seconds", ">", "{:.1f}")]
    columns = [c for c in columns if any(c[0] in r for r in rows)]

    def cell(row: dict, name: str, fmt: str) -> str:
        value = row.get(name)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        return fmt.format(value)

    cells = [[cell(r, name, fmt) for name, _, fmt in columns] for r in rows]
    widths = [max([len(name)] + [len(c[i]) for c in cells]) for i, (name, _, _) in enumerate(columns)]
    lines = ["  ".join(f"{name:{align}{w}}" for (name, align, _), w in zip(columns, widths))]
    lines += ["  ".join(f"{c:{align}{w}}" for c, (_, align, _), w in zip(row, columns, widths)) for row in cells]
    return "\n".join(lines)
