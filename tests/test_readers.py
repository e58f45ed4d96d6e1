"""Readers on real slices of the mmkg data root (``--data-dir``) and every bad-input error."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.data.loader import DatasetSpec, load_pair, resolve_root
from mmea_lightning.data.readers import (
    name_from_uri,
    parse_numeric_value,
    read_entity_ids,
    read_image_features,
    read_links,
    read_numeric_triples,
    read_translated_names,
    read_triples,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"


def spec(name: str) -> DatasetSpec:
    return DatasetSpec.from_config(OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml")))


def slice_pair(src: Path, dst: Path, keep_links: int = 200) -> Path:
    """A small consistent slice of a real pair: all entities, the triples and links among the first links."""
    dst.mkdir(parents=True)
    for name in ("ent_ids_1", "ent_ids_2"):
        shutil.copy(src / name, dst / name)
    links = (src / "ill_ent_ids").read_text().splitlines()[:keep_links]
    (dst / "ill_ent_ids").write_text("\n".join(links) + "\n")
    for name in ("triples_1", "triples_2"):
        lines = (src / name).read_text().splitlines()[:2000]
        (dst / name).write_text("\n".join(lines) + "\n")
    return dst


def test_real_slice_reads(data_dir, tmp_path):
    root = tmp_path / "root"
    slice_pair(data_dir / "FBDB15K" / "norm", root / "FBDB15K" / "norm")
    (root / "mmkb" / "DB15K").mkdir(parents=True)
    lines = (data_dir / "mmkb/DB15K/DB15K_NumericalTriples.txt").read_text().splitlines()[:500]
    (root / "mmkb/DB15K/DB15K_NumericalTriples.txt").write_text("\n".join(lines) + "\n")
    s = spec("fbdb15k")
    s.numeric = ["mmkb/DB15K/DB15K_NumericalTriples.txt"]
    s.mid2name = None
    pair = load_pair(s, root)
    assert pair.counts() == {"kg1_entities": 14951, "kg2_entities": 12842, "kg1_triples": 2000,
                             "kg2_triples": 2000, "gold_links": 200}
    assert pair.gold_links[0].tolist() == [4506, 17975]  # the file's first line
    assert pair.uris[14951] == "<http://dbpedia.org/resource/Rebecca_Hall>"
    assert len(pair.numeric_values) == 500 and np.isfinite(pair.numeric_values).all()
    assert pair.image_features is None and not pair.available_modalities()["image"]
    assert any("training_attrs_1" in note for note in pair.notes)
    assert pair.names[14951] == "Rebecca Hall"


def test_translated_names_real(data_dir):
    names = read_translated_names(data_dir / "DBP15K/translated_ent_name/dbp_zh_en.json", 38960)
    assert len(names) == 38960 and names[0] == "abdullah gul"


def test_numeric_values_and_dates():
    assert parse_numeric_value("75500000.0") == 75500000.0
    assert parse_numeric_value("-12.5") == -12.5
    assert parse_numeric_value("1969-03-01") == pytest.approx(1969 + 2 / 12)
    assert parse_numeric_value("1951-##-##") == 1951.0
    assert parse_numeric_value("06##-##-##") == 600.0
    assert parse_numeric_value("1954-03-##") == pytest.approx(1954 + 2 / 12)
    assert parse_numeric_value("-44-03-15") == pytest.approx(-44 + 2 / 12 + 14 / 365)
    for bad in ("abc", "nan", "inf", "1969/03/01"):
        with pytest.raises(ValueError):
            parse_numeric_value(bad)


def test_name_from_uri():
    assert name_from_uri("<http://dbpedia.org/resource/Rebecca_Hall>") == "Rebecca Hall"
    assert name_from_uri("http://www.wikidata.org/entity/Q325033") is None
    assert name_from_uri("/m/0gtx63s") is None


# ------------------------------------------------------------------------------------------- bad input


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def expect(err: pytest.ExceptionInfo, path: Path, line: int | None, words: str):
    assert err.value.path == str(path)
    assert err.value.line == line
    assert words in str(err.value) and "Fix:" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataFormatError) as err:
        read_entity_ids(tmp_path / "ent_ids_1")
    expect(err, tmp_path / "ent_ids_1", None, "missing")
    assert "data_dir" in str(err.value)


def test_malformed_entity_line(tmp_path):
    path = write(tmp_path / "ent_ids_1", "0\ta\n1 b\n")
    with pytest.raises(DataFormatError) as err:
        read_entity_ids(path)
    expect(err, path, 2, "expected 2 tab-separated fields")


def test_non_integer_and_duplicate_entity(tmp_path):
    path = write(tmp_path / "e", "0\ta\nx\tb\n")
    with pytest.raises(DataFormatError) as err:
        read_entity_ids(path)
    expect(err, path, 2, "not an integer")
    path = write(tmp_path / "e2", "0\ta\n0\tb\n")
    with pytest.raises(DataFormatError) as err:
        read_entity_ids(path)
    expect(err, path, 2, "already defined on line 1")


def test_triple_id_out_of_range_and_wrong_graph(tmp_path):
    ids1 = np.array([0, 1])
    path = write(tmp_path / "triples_1", "0\t0\t1\n0\t1\t7\n")
    with pytest.raises(DataFormatError) as err:
        read_triples(path, ids1, 4)
    expect(err, path, 2, "tail id 7")
    path = write(tmp_path / "triples_1b", "0\t0\t3\n")
    with pytest.raises(DataFormatError) as err:
        read_triples(path, ids1, 4)
    expect(err, path, 1, "tail id 3 is not an entity of this graph")
    path = write(tmp_path / "triples_1c", "0\t0\n")
    with pytest.raises(DataFormatError) as err:
        read_triples(path, ids1, 4)
    expect(err, path, 1, "expected 3")


def test_links_errors(tmp_path):
    ids1, ids2 = np.array([0, 1]), np.array([2, 3])
    path = write(tmp_path / "ill", "0\t2\n1\t3\n0\t2\n")
    with pytest.raises(DataFormatError) as err:
        read_links(path, ids1, ids2, 4)
    expect(err, path, 3, "duplicate gold link (0, 2), first on line 1")
    path = write(tmp_path / "ill2", "2\t0\n")
    with pytest.raises(DataFormatError) as err:
        read_links(path, ids1, ids2, 4)
    expect(err, path, 1, "not a KG1 entity")
    path = write(tmp_path / "ill3", "0\t9\n")
    with pytest.raises(DataFormatError) as err:
        read_links(path, ids1, ids2, 4)
    expect(err, path, 1, "not a KG2 entity")
    path = write(tmp_path / "ill4", "\n")
    with pytest.raises(DataFormatError) as err:
        read_links(path, ids1, ids2, 4)
    expect(err, path, None, "no gold links")


def test_numeric_bad_value(tmp_path):
    path = write(tmp_path / "num", "a\tx\t1.0\na\tx\tbanana\n")
    with pytest.raises(DataFormatError) as err:
        read_numeric_triples(path, {"a": 0})
    expect(err, path, 2, "neither a finite number nor a date")


def test_names_json_errors(tmp_path):
    path = write(tmp_path / "n.json", '[[0, ["a"]], [1, "b"]]')
    with pytest.raises(DataFormatError) as err:
        read_translated_names(path, 5)
    assert "record 1" in str(err.value)
    path = write(tmp_path / "n2.json", '[[0, ["a"]],')
    with pytest.raises(DataFormatError) as err:
        read_translated_names(path, 5)
    assert "invalid JSON" in str(err.value)
    path = write(tmp_path / "n3.json", '[[9, ["a"]]]')
    with pytest.raises(DataFormatError) as err:
        read_translated_names(path, 5)
    assert "outside the entity files" in str(err.value)


def test_image_pickle_errors(tmp_path):
    path = tmp_path / "img.pkl"
    path.write_bytes(pickle.dumps({0: np.ones(3), 7: np.ones(3)}))
    with pytest.raises(DataFormatError) as err:
        read_image_features(path, 5)
    assert "key 7" in str(err.value)
    path.write_bytes(pickle.dumps({0: np.ones(3), 1: np.ones(4)}))
    with pytest.raises(DataFormatError) as err:
        read_image_features(path, 5)
    assert "length 4" in str(err.value)
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError):
        read_image_features(path, 5)
    path.write_bytes(pickle.dumps({0: np.ones(3, dtype=np.float64), 2: np.zeros(3)}))
    feats = read_image_features(path, 5)
    assert set(feats) == {0, 2} and feats[0].dtype == np.float32


def test_pair_level_errors(tmp_path):
    root = tmp_path / "r"
    write(root / "P/ent_ids_1", "0\ta\n1\tb\n")
    write(root / "P/ent_ids_2", "1\tc\n")
    s = DatasetSpec(name="p", folder="P")
    with pytest.raises(DataFormatError) as err:
        load_pair(s, root)
    assert "also used in ent_ids_1" in str(err.value)
    write(root / "P/ent_ids_2", "5\tc\n")
    with pytest.raises(DataFormatError) as err:
        load_pair(s, root)
    assert "not contiguous" in str(err.value)


def test_unknown_dataset_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        DatasetSpec.from_config({"name": "x", "folder": "y", "colour": "red"})
    with pytest.raises(ValueError, match="data_dir"):
        resolve_root(spec("fbdb15k"), None, tmp_path)
    with pytest.raises(DataFormatError, match="dataset folder"):
        resolve_root(spec("fbdb15k"), tmp_path, tmp_path)
