"""On-disk cache of seed-generation stages, so that a sweep over aligners does not recompute the seeds.

A stage's key is a hash of the *content* of the input features it may read (graph, entity ids, every modality
table and mask -- never the gold links, which are not part of a :class:`FeatureSet`), of the stage's settings and
of the key of the stage it starts from. Entries are ``<cache_dir>/seeds/<generator>/<stage>-<key>.pt``, written
to a temporary file and renamed (a reader sees a complete entry or none); an unreadable entry is recomputed.

Entries hold tensors and plain containers only (numpy arrays are stored as tensors and given back as arrays, numpy
scalars as Python numbers) and are read with ``torch.load(weights_only=True)``, which builds no other object: a
planted or corrupt entry is never executed -- it is ignored with a warning and the stage is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from mmea_lightning.atomic_files import save_torch_atomic
from mmea_lightning.data.features import FeatureSet
from mmea_lightning.data.loader import check_path_component

log = logging.getLogger(__name__)

__all__ = ["StageCache", "features_fingerprint", "stage_key"]

CACHE_VERSION = 7  # bump when a stage computes something different from the same inputs and settings
# (5: Stage I returns its seeds most similar first, which changes Stages II and III; 6: weights_only entries;
# 7: Stages II and III score an entity without a value of a head's modality as no evidence in that view)

_NDARRAY = "__ndarray__"  # marks a numpy array stored as a tensor


def _to_safe(value: object) -> object:
    """``value`` with numpy arrays as tagged tensors and numpy scalars as Python numbers (weights_only-loadable)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("a seed cache payload cannot hold object arrays")
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {key: _to_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_safe(item) for item in value)
    if value is None or isinstance(value, (torch.Tensor, str, int, float, bool)):
        return value
    raise TypeError(f"a seed cache payload cannot hold a {type(value).__name__}")


def _from_safe(value: object) -> object:
    """The inverse of :func:`_to_safe`."""
    if isinstance(value, dict):
        if set(value) == {_NDARRAY} and isinstance(value[_NDARRAY], torch.Tensor):
            return value[_NDARRAY].numpy()
        return {key: _from_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_from_safe(item) for item in value)
    return value


def _update(digest, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())


def features_fingerprint(features: FeatureSet) -> str:
    """A hash of everything a seed generator can read from ``features`` (graph, ids, modality tables, masks)."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}:{features.num_entities}".encode())
    for tensor in (features.kg1_ids, features.kg2_ids, features.edge_index, features.edge_weight):
        _update(digest, tensor.numpy())
    for name in sorted(features.modalities):
        digest.update(name.encode())
        _update(digest, features.modalities[name].numpy())
    for name in sorted(features.masks):
        digest.update(f"mask:{name}".encode())
        _update(digest, features.masks[name].numpy())
    for name in ("numeric_entities", "numeric_values"):
        tensor = getattr(features, name, None)
        if tensor is not None:
            digest.update(name.encode())
            _update(digest, tensor.numpy())
    return digest.hexdigest()[:24]


def stage_key(*parts: object) -> str:
    """A hash of JSON-serialisable ``parts`` (settings, upstream keys)."""
    payload = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class StageCache:
    """``load``/``save`` of one stage's payload (a dict of numpy arrays, tensors and JSON-able values).

    Args:
        cache_dir: the run's cache root (``paths.cache_dir``); ``None`` disables caching.
        generator: the generator's name (a sub-folder): one safe path component, else a ``ValueError``.
    """

    def __init__(self, cache_dir: str | Path | None, generator: str):
        generator = check_path_component(generator, "seed generator name")  # one folder under <cache_dir>/seeds
        self.root = None if cache_dir is None else Path(cache_dir) / "seeds" / generator

    def path(self, stage: str, key: str) -> Path | None:
        return None if self.root is None else self.root / f"{stage}-{key}.pt"

    def load(self, stage: str, key: str) -> dict | None:
        path = self.path(stage, key)
        if path is None or not path.is_file():
            return None
        try:
            payload = _from_safe(torch.load(path, weights_only=True))
            if not isinstance(payload, dict):
                raise ValueError(f"holds a {type(payload).__name__}, not a dict")
        except Exception as err:  # an unreadable or unsafe entry is recomputed, never trusted
            log.warning("ignoring unreadable seed cache %s (%s); recomputing the stage", path, err)
            return None
        log.info("seed stage %s loaded from cache %s", stage, path)
        return payload

    def save(self, stage: str, key: str, payload: Mapping) -> None:
        path = self.path(stage, key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        save_torch_atomic(path, _to_safe(dict(payload)))
