"""Adversarial input (issue 27): planted pickles, inconsistent or degenerate files, path escapes.

Every bad input must end in a :class:`DataFormatError` naming the file (and line) and the fix, or in a warning
recorded in the pair's ``notes`` -- never in code execution, a traceback or a silently wrong result.
"""

from __future__ import annotations

import os
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
from mmea_lightning.data.fingerprint import input_digests
from mmea_lightning.data.loader import DatasetSpec, load_pair
from mmea_lightning.data.readers import parse_numeric_value, read_image_features, read_numeric_triples
from mmea_lightning.data.splits import split_links
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


# ------------------------------------------------------------------------------------- 2. bad input

TINY = {
    "P/ent_ids_1": "0\ta\n1\tb\n2\tc\n",
    "P/ent_ids_2": "3\tA\n4\tB\n5\tC\n",
    "P/triples_1": "0\t0\t1\n1\t1\t2\n",
    "P/triples_2": "3\t0\t4\n4\t1\t5\n",
    "P/ill_ent_ids": "0\t3\n1\t4\n2\t5\n",
    "P/training_attrs_1": "a\tborn\nb\tdied\n",
    "P/training_attrs_2": "A\tborn\nC\tdied\n",
}


def tiny_root(tmp_path: Path, **files: str | bytes) -> Path:
    """A three-links pair under ``tmp_path/root``; ``files`` (``P__triples_2=...``) replace or add files."""
    root = tmp_path / "root"
    contents = {**TINY, **{name.replace("__", "/"): text for name, text in files.items()}}
    for name, text in contents.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    return root


def tiny_spec(**overrides) -> DatasetSpec:
    return DatasetSpec(**{"name": "tiny", "folder": "P", "names_from_uri": False, **overrides})


def expect(err: pytest.ExceptionInfo, path: Path, line: int | None, *words: str) -> None:
    assert err.value.path == str(path), err.value
    assert err.value.line == line, err.value
    message = str(err.value)
    assert all(word in message for word in words) and "Fix:" in message, message


def test_tiny_pair_loads(tmp_path):
    pair = load_pair(tiny_spec(), tiny_root(tmp_path))
    assert pair.counts()["gold_links"] == 3 and pair.available_modalities()["structure"]


@pytest.mark.parametrize("links, line, words", [
    ("0\t3\n1\t4\n0\t5\n", 3, ("KG1 entity 0", "line 1", "line 3")),
    ("0\t3\n1\t4\n2\t3\n", 3, ("KG2 entity 3", "line 1", "line 3")),
])
def test_gold_links_must_be_one_to_one(tmp_path, links, line, words):
    root = tiny_root(tmp_path, P__ill_ent_ids=links)
    with pytest.raises(DataFormatError) as err:
        load_pair(tiny_spec(), root)
    expect(err, root / "P/ill_ent_ids", line, "1-to-1", *words)


def test_many_to_one_gold_links_are_kept_only_when_the_config_says_so(tmp_path, caplog):
    root = tiny_root(tmp_path, P__ill_ent_ids="0\t3\n1\t4\n2\t3\n")
    with pytest.raises(DataFormatError):  # strict by default, whatever the declared counts
        load_pair(tiny_spec(expected_counts={"gold_links": 3}), root)
    pair = load_pair(tiny_spec(gold_one_to_one=False), root)
    assert len(pair.gold_links) == 3
    assert any("not 1-to-1" in note and "line 3" in note for note in pair.notes)
    assert "not 1-to-1" in caplog.text


def test_links_sharing_an_entity_stay_on_one_side_of_every_split():
    """The issue's case: an entity linked twice sat on both sides of the split in 20 of 50 split seeds."""
    rng = np.random.default_rng(0)
    links = np.stack([np.arange(60), 100 + np.arange(60)], axis=1)
    links[[5, 17, 40], 1] = links[[4, 16, 39], 1]  # three KG2 entities linked to two KG1 entities each
    links[41, 0] = links[40, 0]  # and a chain: 39-40 share a KG2 entity, 40-41 a KG1 entity
    for split_seed in range(50):
        split = split_links(links[rng.permutation(len(links))], 0.3, 0.2, split_seed)
        sides = [split.train, split.valid, split.test]
        for column in (0, 1):
            owners = [set(side[:, column].tolist()) for side in sides]
            assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2]), split_seed
        assert sum(len(side) for side in sides) == len(links)


def test_one_to_one_splits_are_unchanged_by_the_grouping():
    links = np.stack([np.arange(50), 100 + np.arange(50)], axis=1)
    split = split_links(links, 0.3, 0.1, 3)
    order = np.random.default_rng(3).permutation(50)
    assert np.array_equal(np.concatenate([split.valid, split.train, split.test]), links[order])


@pytest.mark.parametrize("name", ["triples_1", "triples_2"])
def test_empty_triples_file_is_refused(tmp_path, name):
    root = tiny_root(tmp_path, **{f"P__{name}": "\n"})
    with pytest.raises(DataFormatError) as err:
        load_pair(tiny_spec(), root)
    expect(err, root / "P" / name, None, "no triples")


def test_graph_without_edges_is_never_structure_present(tmp_path, caplog):
    root = tiny_root(tmp_path, P__triples_2="3\t0\t3\n")  # one self-loop: no edge between two entities
    pair = load_pair(tiny_spec(), root)
    assert not pair.available_modalities()["structure"]
    assert any("triples_2" in note and "no edge" in note for note in pair.notes) and "no edge" in caplog.text
    features = build_features(pair, FeatureSettings())
    assert not features.present["structure"] and not features.info["modalities_present"]["structure"]


@pytest.mark.parametrize("value, words", [
    ("1999-13-45", "month 13"),
    ("1999-04-31", "day 31"),
    ("1999-02-29", "day 29"),
    ("1999-01-32", "day 32"),
    ("19##-##-45", "day 45"),
])
def test_impossible_dates_are_refused(tmp_path, value, words):
    path = tmp_path / "num.txt"
    path.write_text(f"a\tx\t1.0\na\tbirth\t{value}\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        read_numeric_triples(path, {"a": 0})
    expect(err, path, 2, value, words)


def test_possible_and_partly_unknown_dates_are_accepted():
    assert parse_numeric_value("2000-02-29") == pytest.approx(2000 + 1 / 12 + 28 / 365)
    assert parse_numeric_value("19##-02-29") == pytest.approx(1900 + 1 / 12 + 28 / 365)  # the year may be leap
    assert parse_numeric_value("1951-##-31") == pytest.approx(1951 + 30 / 365)
    assert parse_numeric_value("1957-9-0") == pytest.approx(1957 + 8 / 12)  # DB15K's 0: unknown, as '#'
    assert parse_numeric_value("1965-0-0") == 1965.0


def test_huge_relation_ids_cost_no_memory(tmp_path):
    import tracemalloc

    root = tiny_root(tmp_path, P__triples_1="0\t50000000\t1\n1\t7\t2\n", P__triples_2="3\t50000000\t4\n4\t9\t5\n")
    tracemalloc.start()
    try:
        pair = load_pair(tiny_spec(), root)
        features = build_features(pair, FeatureSettings())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert pair.num_relations == 3 and pair.relation_ids.tolist() == [7, 9, 50000000]
    assert pair.relation_ids[pair.triples1[0, 1]] == 50000000  # the original id is kept for reporting
    assert features.modalities["relation"].shape == (6, 3)
    assert features.modalities["relation"][0].sum() == 1 and features.modalities["relation"][1].sum() == 2


@pytest.mark.parametrize("content, words", [
    ({}, ("no image vectors", "images: null")),
    ({0: np.ones(3), 2: np.ones((2, 3))}, ("entity 2", "shape (2, 3)", "1-D")),
    ({0: np.ones((1, 3))}, ("entity 0", "shape (1, 3)")),
    ({0: np.ones(3), 4: "a photo"}, ("entity 4", "str")),
    ({1: ["a", "b", "c"]}, ("entity 1", "list")),
    ({1: None}, ("entity 1", "NoneType")),
    ({1: {"v": np.ones(3)}}, ("entity 1", "dict")),
    ({1: np.array(["a", "b"])}, ("entity 1", "<U1")),
    ({True: np.ones(3)}, ("key True",)),
])
def test_bad_image_pickle_contents_are_refused(tmp_path, content, words):
    path = tmp_path / "img.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(DataFormatError) as err:
        read_image_features(path, 5)
    expect(err, path, None, *words)


def image_pair(tmp_path, vectors: dict) -> tuple:
    path = tiny_root(tmp_path) / "pkls" / "img.pkl"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(vectors, protocol=4))
    return load_pair(tiny_spec(images="pkls/img.pkl"), path.parents[1]), path


def test_zero_image_vector_counts_as_missing(tmp_path, caplog):
    rng = np.random.default_rng(0)
    vectors = {i: rng.normal(size=4).astype(np.float32) for i in (0, 1, 3, 4)}
    vectors[5] = np.zeros(4, dtype=np.float32)
    pair, path = image_pair(tmp_path, vectors)
    assert set(pair.image_features) == {0, 1, 3, 4} and pair.available_modalities()["image"]
    assert any(str(path) in note and "all-zero" in note and "1 entit" in note for note in pair.notes)
    assert "all-zero" in caplog.text
    features = build_features(pair, FeatureSettings())
    assert not features.masks["image"][5] and features.masks["image"][[0, 1, 3, 4]].all()
    assert any("all-zero" in note for note in features.info["notes"])


@pytest.mark.parametrize("kind", ["zero", "constant", "single"])
def test_uninformative_images_make_the_modality_absent(tmp_path, caplog, kind):
    if kind == "zero":
        vectors = {i: np.zeros(4, dtype=np.float32) for i in range(6)}
    elif kind == "constant":
        vectors = {i: np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32) for i in range(6)}
    else:
        vectors = {0: np.ones(4, dtype=np.float32), **{i: np.zeros(4, dtype=np.float32) for i in range(1, 6)}}
    pair, path = image_pair(tmp_path, vectors)
    assert pair.image_features is None and not pair.available_modalities()["image"]
    assert any(str(path) in note and "image modality is absent" in note for note in pair.notes)
    assert "image modality is absent" in caplog.text
    features = build_features(pair, FeatureSettings())
    assert "image" not in features.modalities and not features.present.get("image")


def test_utf8_bom_does_not_drop_the_first_line(tmp_path):
    bom = "\ufeff"
    root = tiny_root(tmp_path, P__ent_ids_1=bom + TINY["P/ent_ids_1"], P__triples_1=bom + TINY["P/triples_1"],
                     P__ill_ent_ids=bom + TINY["P/ill_ent_ids"], P__training_attrs_1=bom + TINY["P/training_attrs_1"],
                     names__json=bom + '[[0, ["alpha"]], [3, ["alpha"]]]')
    pair = load_pair(tiny_spec(names_json="names/json"), root)
    assert (0, pair.attribute_names.index("born")) in set(map(tuple, pair.attribute_pairs.tolist()))
    assert not any("skipped" in note for note in pair.notes)
    assert pair.gold_links[0].tolist() == [0, 3] and pair.names[0] == "alpha" and pair.uris[0] == "a"


@pytest.mark.parametrize("name, line", [
    ("P/ent_ids_2", 2), ("P/triples_1", 2), ("P/ill_ent_ids", 3), ("P/training_attrs_2", 2), ("names/json", 3),
])
def test_non_utf8_bytes_name_the_file_and_line(tmp_path, name, line):
    text = TINY.get(name, '[[0, ["alpha"]],\n[3, ["alpha"]],\n[4, ["beta"]]]')
    lines = text.encode().split(b"\n")
    lines[line - 1] = lines[line - 1].replace(b"\t", b"\xe9\t", 1).replace(b"beta", b"b\xe9ta")  # latin-1 'é'
    root = tiny_root(tmp_path, **{name.replace("/", "__"): b"\n".join(lines)})
    with pytest.raises(DataFormatError) as err:
        load_pair(tiny_spec(names_json="names/json"), root)
    expect(err, root / name, line, "UTF-8", "0xe9")


# ------------------------------------------------------------------------------------- 3. path escape


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", "a\\b", ".hidden", "", "x/../..", "a b"])
def test_dataset_name_must_be_one_safe_path_component(name):
    with pytest.raises(ValueError) as err:
        DatasetSpec.from_config({"name": name, "folder": "P"})
    assert "dataset.name" in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(ValueError):
        DatasetSpec(name=name, folder="P")


@pytest.mark.parametrize("key, value", [
    ("folder", "../P"), ("folder", "/etc"), ("folder", "P/../../x"), ("folder", ""), ("folder", "C:\\data"),
    ("attributes", ["training_attrs_1", "../../secret"]), ("numeric", ["/abs/num.txt"]),
    ("names_json", "..\\names.json"), ("mid2name", "mmkb/../../mid"), ("images", "/tmp/evil.pkl"),
])
def test_dataset_file_paths_must_stay_under_the_root(key, value):
    with pytest.raises(ValueError) as err:
        DatasetSpec.from_config({"name": "ok", "folder": "P", key: value})
    assert f"dataset.{key}" in str(err.value) and "Fix:" in str(err.value)


def test_real_configs_pass_the_path_checks():
    for name in ("fbdb15k", "dbp15k_zh_en", "openea_d_w_v1", "toy"):
        assert spec(name).name == name


def test_caches_never_write_outside_their_folder(toy_pair, tmp_path):
    escaped = type(toy_pair)(**{**toy_pair.__dict__, "name": "../../escaped"})
    with pytest.raises(ValueError, match="dataset.name"):
        load_or_build_features(escaped, FeatureSettings(), tmp_path / "cache")
    assert not list(tmp_path.rglob("*.pt"))
    for name in ("../x", "a/b", ".."):
        with pytest.raises(ValueError, match="seed generator name"):
            StageCache(tmp_path, name)
    assert StageCache(tmp_path, "psqe").path("stage1", "k").parent == tmp_path / "seeds" / "psqe"


# ------------------------------------------------------------------------------------- 4. content keys


def test_feature_cache_key_follows_content_not_size_and_mtime(tmp_path):
    root = tiny_root(tmp_path)
    path = root / "P/triples_2"
    stat = path.stat()
    first = load_or_build_features(load_pair(tiny_spec(), root), FeatureSettings(), tmp_path / "cache")
    path.write_text("3\t0\t5\n4\t1\t5\n", encoding="utf-8")  # same size, other edges
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    pair = load_pair(tiny_spec(), root)
    second = load_or_build_features(pair, FeatureSettings(), tmp_path / "cache")
    assert len(list((tmp_path / "cache/features").glob("*.pt"))) == 2
    assert torch.equal(second.edge_index, build_features(pair, FeatureSettings()).edge_index)
    assert not torch.equal(first.edge_index, second.edge_index)


def test_data_fingerprint_hashes_content_independent_of_path(tmp_path):
    one = input_digests(tiny_spec(), tiny_root(tmp_path / "one"))
    two = input_digests(tiny_spec(), tiny_root(tmp_path / "two"))
    other = input_digests(tiny_spec(), tiny_root(tmp_path / "other", P__triples_2="3\t0\t5\n4\t1\t5\n"))
    assert one == two != other
    assert all(len(digest) == 64 for digest in one.values() if digest != "absent")
    # the feature cache key follows the same content
    pairs = [load_pair(tiny_spec(), tmp_path / name / "root") for name in ("one", "two", "other")]
    keys = [feature_cache_key(pair, FeatureSettings()) for pair in pairs]
    assert keys[0] == keys[1] != keys[2]


def test_absent_name_files_are_absent_names_not_an_error(tmp_path):
    """Names only matter with surface=true: a release without its translated-names (or mid2name) file loads, with
    no names and a note; the fingerprint records the file as absent."""
    root = tiny_root(tmp_path)
    spec_ = tiny_spec(names_json="names/json", mid2name="mmkb/mid2name")
    pair = load_pair(spec_, root)
    assert all(name is None for name in pair.names)
    assert any("names/json absent" in note for note in pair.notes), pair.notes
    assert any("mmkb/mid2name absent" in note for note in pair.notes), pair.notes
    assert input_digests(spec_, root)["names_json"] == "absent"
    features = build_features(pair, FeatureSettings())
    assert not features.present.get("name_char", False)
