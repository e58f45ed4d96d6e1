"""The typed in-memory view of one knowledge-graph pair, as read from the ``mmkg`` layout or a user's TSV files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class KGPair:
    """Two knowledge graphs over one global id space ``0..num_entities-1``.

    Arrays are int64 unless said otherwise.

    Attributes:
        name: dataset name (e.g. ``fbdb15k``).
        uris: ``uris[i]`` is the URI of entity ``i``.
        kg1_ids / kg2_ids: sorted ids of the source / target graph's entities.
        triples1 / triples2: ``(T, 3)`` ``head, relation, tail`` of each graph.
        num_relations: the number of distinct relations. Relation ids in ``triples1`` / ``triples2`` are dense,
            ``0..num_relations-1`` (so memory depends on the number of relations, never on how large an id is).
        relation_ids: ``relation_ids[r]`` is the relation id the files use for dense relation ``r`` (report these).
        gold_links: ``(L, 2)`` ``kg1_id, kg2_id`` -- the whole gold alignment, in file order.
        attribute_pairs: ``(P, 2)`` ``entity_id, attribute_index`` -- attribute keys (no values).
        attribute_names: ``attribute_names[k]`` names attribute index ``k``.
        numeric_entities / numeric_attributes / numeric_values: parallel arrays, one numeric triple each
            (``numeric_values`` float64; ``numeric_attributes`` index ``numeric_attribute_names``).
        names: ``names[i]`` is the surface name of entity ``i`` or ``None`` when unknown.
        image_features: ``dict[entity_id -> float32 vector]``, or ``None`` when no image feature file exists.
        files: the files actually read (role -> path), for provenance and cache keys.
        notes: human-readable remarks made while reading (e.g. lines skipped for unknown URIs).
    """

    name: str
    uris: list[str]
    kg1_ids: np.ndarray
    kg2_ids: np.ndarray
    triples1: np.ndarray
    triples2: np.ndarray
    num_relations: int
    relation_ids: np.ndarray
    gold_links: np.ndarray
    attribute_pairs: np.ndarray
    attribute_names: list[str]
    numeric_entities: np.ndarray
    numeric_attributes: np.ndarray
    numeric_values: np.ndarray
    numeric_attribute_names: list[str]
    names: list[str | None]
    image_features: dict[int, np.ndarray] | None
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_records(cls, *, name: str, uris: list[str], kg1_ids: np.ndarray, kg2_ids: np.ndarray,
                     triples1: np.ndarray, triples2: np.ndarray, gold_links: np.ndarray,
                     attribute_keys: Sequence[tuple[int, str]], numeric_rows: Sequence[tuple[int, str, float]],
                     names: list[str | None], image_features: dict[int, np.ndarray] | None,
                     files: dict[str, str], notes: list[str]) -> KGPair:
        """The pair of records as a reader gives them, whatever the file layout.

        Args:
            triples1 / triples2: ``(T, 3)`` with the relation ids of the files (any non-negative integers): they
                are renumbered to a dense ``0..R-1`` in their order (``relation_ids`` keeps the given ones).
            attribute_keys: ``(entity_id, attribute key)`` pairs; keys are indexed in sorted order.
            numeric_rows: ``(entity_id, attribute, value)``; attributes are indexed in sorted order.
            The other arguments are the fields of the same name.
        """
        relation_ids, dense = np.unique(np.concatenate([triples1[:, 1], triples2[:, 1]]), return_inverse=True)
        triples1, triples2 = triples1.copy(), triples2.copy()
        triples1[:, 1], triples2[:, 1] = dense[: len(triples1)], dense[len(triples1):]
        attribute_names = sorted({key for _, key in attribute_keys})
        attr_index = {key: k for k, key in enumerate(attribute_names)}
        numeric_attribute_names = sorted({a for _, a, _ in numeric_rows})
        num_index = {a: k for k, a in enumerate(numeric_attribute_names)}
        return cls(
            name=name,
            uris=uris,
            kg1_ids=np.sort(kg1_ids),
            kg2_ids=np.sort(kg2_ids),
            triples1=triples1,
            triples2=triples2,
            num_relations=len(relation_ids),
            relation_ids=relation_ids.astype(np.int64),
            gold_links=gold_links,
            attribute_pairs=np.asarray([(e, attr_index[k]) for e, k in attribute_keys], dtype=np.int64).reshape(-1, 2),
            attribute_names=attribute_names,
            numeric_entities=np.asarray([e for e, _, _ in numeric_rows], dtype=np.int64),
            numeric_attributes=np.asarray([num_index[a] for _, a, _ in numeric_rows], dtype=np.int64),
            numeric_values=np.asarray([v for _, _, v in numeric_rows], dtype=np.float64),
            numeric_attribute_names=numeric_attribute_names,
            names=names,
            image_features=image_features,
            files=files,
            notes=notes,
        )

    @property
    def num_entities(self) -> int:
        return len(self.uris)

    @property
    def triples(self) -> np.ndarray:
        """All triples of both graphs, ``(T1 + T2, 3)``."""
        return np.concatenate([self.triples1, self.triples2], axis=0)

    def counts(self) -> dict[str, int]:
        """The entity, triple and gold-link counts (as ``expected_counts`` in the dataset configs)."""
        return {
            "kg1_entities": len(self.kg1_ids),
            "kg2_entities": len(self.kg2_ids),
            "kg1_triples": len(self.triples1),
            "kg2_triples": len(self.triples2),
            "gold_links": len(self.gold_links),
        }

    def available_modalities(self) -> dict[str, bool]:
        """Which raw modalities this pair really carries (an absent one is never faked).

        ``structure`` needs an edge between two different entities in *both* graphs: a graph without one (no
        triple, or self-loops only) has no structure to align.
        """
        return {
            "structure": has_edge(self.triples1) and has_edge(self.triples2),
            "relation": len(self.triples1) + len(self.triples2) > 0,
            "attribute": len(self.attribute_pairs) > 0,
            "numeric": len(self.numeric_values) > 0,
            "image": bool(self.image_features),
            "name": any(n for n in self.names),
        }


def has_edge(triples: np.ndarray) -> bool:
    """Whether ``triples (T, 3)`` hold a triple between two different entities (a graph edge)."""
    return bool(len(triples)) and bool((triples[:, 0] != triples[:, 2]).any())
