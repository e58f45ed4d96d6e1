"""Adversarial input (issue 27): planted pickles, inconsistent or degenerate files, path escapes.

Every bad input must end in a :class:`DataFormatError` naming the file (and line) and the fix, or in a warning
recorded in the pair's ``notes`` -- never in code execution, a traceback or a silently wrong result.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.data.features import (
    FeatureSettings,
    build_features,
    feature_cache_key,
    load_or_build_features,
)
from mmea_lightning.data.loader import load_pair
from mmea_lightning.data.readers import read_image_features
from mmea_lightning.data.toy import generate_toy_pair
from mmea_lightning.seeds.cache import StageCache

from .test_readers import spec


class Planted:
    """An object whose unpickling writes ``marker``: what a malicious data or cache file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('executed')",)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return generate_toy_pair(tmp_path_factory.mktemp("toy") / "toy")


@pytest.fixture(scope="module")
def toy_pair(toy_root):
    return load_pair(spec("toy"), toy_root)


# ------------------------------------------------------------------------------------- 1. code execution


def test_image_pickle_cannot_execute_code(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "img.pkl"
    path.write_bytes(pickle.dumps({0: Planted(marker)}))
    with pytest.raises(DataFormatError) as err:
        read_image_features(path, 5)
    assert not marker.exists()
    assert err.value.path == str(path) and "builtins.exec" in str(err.value) and "Fix:" in str(err.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_image_pickle_legitimate_protocols_load(tmp_path, protocol, dtype):
    path = tmp_path / "img.pkl"
    vectors = {0: np.arange(1, 4, dtype=dtype), np.int64(3): np.array([0.5, -1.0, 2.0], dtype=dtype)}
    path.write_bytes(pickle.dumps(vectors, protocol=protocol))
    feats = read_image_features(path, 5)
    assert set(feats) == {0, 3} and all(v.dtype == np.float32 for v in feats.values())
    assert np.allclose(feats[3], [0.5, -1.0, 2.0])


def test_image_pickle_written_by_numpy_1_loads(tmp_path):
    path = tmp_path / "img.pkl"
    data = pickle.dumps({2: np.array([1.0, 2.0], dtype=np.float32)}, protocol=2)
    path.write_bytes(data.replace(b"numpy._core.", b"numpy.core."))  # numpy 1.x module paths (GLOBAL opcode)
    assert b"numpy.core.multiarray" in path.read_bytes()
    assert np.allclose(read_image_features(path, 5)[2], [1.0, 2.0])


def test_toy_image_pickle_still_loads(toy_root, toy_pair):
    assert toy_pair.image_features and toy_pair.available_modalities()["image"]


def test_planted_feature_cache_is_never_executed(toy_pair, tmp_path):
    marker = tmp_path / "marker"
    settings = FeatureSettings()
    path = tmp_path / "features" / f"{toy_pair.name}-{feature_cache_key(toy_pair, settings)}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"num_entities": Planted(marker)}, path)
    features = load_or_build_features(toy_pair, settings, tmp_path)
    assert not marker.exists()
    expected = build_features(toy_pair, settings)
    assert torch.equal(features.modalities["relation"], expected.modalities["relation"])
    again = load_or_build_features(toy_pair, settings, tmp_path)  # the rebuilt entry is a safe one
    assert torch.equal(again.adjacency.to_dense(), expected.adjacency.to_dense())
    assert again.info == expected.info and not marker.exists()


def test_planted_seed_cache_is_never_executed(tmp_path):
    marker = tmp_path / "marker"
    cache = StageCache(tmp_path, "pivot")
    path = cache.path("pivot", "abc")
    path.parent.mkdir(parents=True)
    torch.save({"links": Planted(marker)}, path)
    assert cache.load("pivot", "abc") is None
    assert not marker.exists()


def test_seed_cache_round_trips_numpy_payloads(tmp_path):
    cache = StageCache(tmp_path, "psqe")
    payload = {"links": np.array([[0, 5], [1, 6]], dtype=np.int64), "seconds": 1.5,
               "extra": {"state_dict": {"w": torch.ones(2)}},
               "info": {"weights": {"a": np.float64(0.25)}, "count": np.int64(2), "clusters": [{"x": None}]}}
    cache.save("stage1", "k", payload)
    loaded = cache.load("stage1", "k")
    assert isinstance(loaded["links"], np.ndarray) and loaded["links"].tolist() == [[0, 5], [1, 6]]
    assert torch.equal(loaded["extra"]["state_dict"]["w"], torch.ones(2))
    assert loaded["info"] == {"weights": {"a": 0.25}, "count": 2, "clusters": [{"x": None}]}
    assert loaded["seconds"] == 1.5
