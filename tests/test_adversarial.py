"""Adversarial input (issue 27): planted pickles, inconsistent or degenerate files, path escapes.

Every bad input must end in a :class:`DataFormatError` naming the file (and line) and the fix, or in a warning
recorded in the pair's ``notes`` -- never in code execution, a traceback or a silently wrong result.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.data.loader import load_pair
from mmea_lightning.data.readers import read_image_features
from mmea_lightning.data.toy import generate_toy_pair

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
