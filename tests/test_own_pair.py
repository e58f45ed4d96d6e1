"""Your own pair (``dataset=tsv``): URI-keyed TSV files derived from the toy pair train to the very numbers of the toy
pair in the mmkg layout; absent optional files are absent modalities; bad lines name file, line and fix."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.data.features import FeatureSettings, build_features
from mmea_lightning.data.fingerprint import input_digests
from mmea_lightning.data.loader import DatasetSpec, load_pair, resolve_root
from mmea_lightning.data.toy import TOY_FOLDER, generate_toy_pair
from mmea_lightning.data.tsv_pair import TsvPairSpec

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = ["model.max_epochs=3", "threads=1", "logger=none"]


def _uri(ent: int, num_kg1: int) -> str:
    return f"http://kg{1 if ent < num_kg1 else 2}.example/e{ent:05d}"  # zero-padded: sorted URIs = the toy's ids


def _write(path: Path, rows: list[str]) -> None:
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")


def derive_tsv_pair(toy_root: Path, out: Path, *, gaps: bool = False) -> Path:
    """The toy pair of ``toy_root`` as a TSV folder: entity ``i`` is ``http://kg<g>.example/e<i>``, relation ``r``
    ``http://rel.example/r<r>``. Entities without triples go to ``entities_<g>.tsv``. With ``gaps``: no numeric,
    name or image file, and no attribute file for KG2."""
    pair = toy_root / TOY_FOLDER
    out.mkdir(parents=True)
    num_kg1 = len((pair / "ent_ids_1").read_text().splitlines())
    old_id = {}
    for g in (1, 2):
        for line in (pair / f"ent_ids_{g}").read_text().splitlines():
            ident, uri = line.split("\t")
            old_id[uri] = int(ident)
    for g in (1, 2):
        triples = [line.split("\t") for line in (pair / f"triples_{g}").read_text().splitlines()]
        _write(out / f"triples_{g}.tsv", [f"{_uri(int(h), num_kg1)}\thttp://rel.example/r{int(r):03d}\t"
                                          f"{_uri(int(t), num_kg1)}" for h, r, t in triples])
        in_triples = {int(x) for h, _, t in triples for x in (h, t)}
        ids = [int(line.split("\t")[0]) for line in (pair / f"ent_ids_{g}").read_text().splitlines()]
        _write(out / f"entities_{g}.tsv", [_uri(i, num_kg1) for i in ids if i not in in_triples])
        if not (gaps and g == 2):
            rows = [line.split("\t") for line in (pair / f"training_attrs_{g}").read_text().splitlines()]
            _write(out / f"attributes_{g}.tsv", [f"{_uri(old_id[r[0]], num_kg1)}\t{key}\tsome value"
                                                 for r in rows for key in r[1:]])
        if gaps:
            continue
        tag = "AB"[g - 1]
        numeric = (toy_root / "mmkb" / f"TOY{tag}" / f"TOY{tag}_NumericalTriples.txt").read_text().splitlines()
        _write(out / f"numeric_{g}.tsv", [f"{_uri(old_id[u], num_kg1)}\t{a}\t{v}"
                                          for u, a, v in (line.split("\t") for line in numeric)])
    links = [line.split("\t") for line in (pair / "ill_ent_ids").read_text().splitlines()]
    _write(out / "links.tsv", [f"{_uri(int(a), num_kg1)}\t{_uri(int(b), num_kg1)}" for a, b in links])
    if gaps:
        return out
    names = json.loads((toy_root / "TOY" / "translated_ent_name" / "toy.json").read_text())
    with open(toy_root / "pkls" / "TOY_id_img_feature_dict.pkl", "rb") as handle:
        images = pickle.load(handle)  # noqa: S301 -- the file the toy generator of this test session just wrote
    for g in (1, 2):
        mine = [(i, tokens) for i, tokens in names if (i < num_kg1) == (g == 1)]
        _write(out / f"names_{g}.tsv", [f"{_uri(i, num_kg1)}\t{' '.join(tokens)}" for i, tokens in mine])
        ids = sorted(i for i in images if (i < num_kg1) == (g == 1))
        np.save(out / f"images_{g}.npy", np.stack([images[i] for i in ids]))
        _write(out / f"images_{g}_uris.tsv", [_uri(i, num_kg1) for i in ids])
    return out


def tsv_spec(folder: Path, **overrides) -> TsvPairSpec:
    return DatasetSpec.from_config({"format": "tsv", "name": "my_pair", "path": str(folder), **overrides})


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return generate_toy_pair(tmp_path_factory.mktemp("cache") / "toy")


@pytest.fixture(scope="module")
def tsv_folder(toy_root, tmp_path_factory) -> Path:
    return derive_tsv_pair(toy_root, tmp_path_factory.mktemp("own") / "my_pair")


def test_the_tsv_pair_is_the_toy_pair_with_ids_assigned_by_the_loader(toy_root, tsv_folder):
    toy_cfg = yaml.safe_load((ROOT / "conf" / "dataset" / "toy.yaml").read_text())
    benchmark = load_pair(DatasetSpec.from_config(toy_cfg), toy_root)
    spec = tsv_spec(tsv_folder)
    own = load_pair(spec, resolve_root(spec, data_dir=None, cache_dir=None))
    assert own.name == "my_pair" and own.counts() == benchmark.counts()
    for key in ("kg1_ids", "kg2_ids", "triples1", "triples2", "gold_links", "numeric_entities", "numeric_attributes",
                "numeric_values"):
        assert np.array_equal(getattr(own, key), getattr(benchmark, key)), key
    assert own.names == benchmark.names and own.attribute_names == benchmark.attribute_names
    assert sorted(map(tuple, own.attribute_pairs.tolist())) == sorted(map(tuple, benchmark.attribute_pairs.tolist()))
    assert own.uris[0] == "http://kg1.example/e00000" and own.uris[-1].startswith("http://kg2.example/")
    assert list(own.image_features) == list(benchmark.image_features)
    ours, theirs = build_features(own, FeatureSettings()), build_features(benchmark, FeatureSettings())
    assert ours.present == theirs.present and set(ours.modalities) == set(theirs.modalities)
    for name, tensor in theirs.modalities.items():
        assert torch.equal(ours.modalities[name], tensor), name
    assert torch.equal(ours.edge_index, theirs.edge_index)


def _train(args: list[str], run_dir: Path, cache_dir: Path) -> dict:
    env = {**os.environ, "MMEA_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run([sys.executable, "-m", "mmea_lightning.train", *args, *EPOCHS, f"hydra.run.dir={run_dir}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(toy_root, tsv_folder, tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("runs")
    cache = toy_root.parent  # the toy pair the TSV folder was derived from: dataset=toy reads it from there
    benchmark = _train(["dataset=toy"], out / "toy", cache)
    own = _train(["dataset=tsv", "dataset.name=my_pair", f"dataset.path={tsv_folder}"], out / "own", cache)
    return benchmark, own


def test_cli_run_is_labelled_with_the_users_name_and_matches_the_mmkg_run(runs):
    benchmark, own = runs
    assert own["run"]["dataset"] == "my_pair" and benchmark["run"]["dataset"] == "toy"
    assert own["run"]["counts"] == benchmark["run"]["counts"]
    assert own["run"]["modalities_present"] == benchmark["run"]["modalities_present"]
    assert own["run"]["modalities_used"] == benchmark["run"]["modalities_used"]
    metrics = [key for key in benchmark if key.startswith("test")]
    assert len(metrics) >= 20
    assert {key: own[key] for key in metrics} == pytest.approx({key: benchmark[key] for key in metrics}, abs=1e-6)
    fingerprint = own["run"]["data_fingerprint"]
    assert set(fingerprint) >= {"triples_1", "triples_2", "links", "images_1", "image_uris_1", "names_2"}
    assert all(len(digest) == 64 for digest in fingerprint.values())  # every file of the folder is present here


def test_absent_optional_files_are_absent_modalities_own_config_via_searchpath(toy_root, tmp_path):
    folder = derive_tsv_pair(toy_root, tmp_path / "gappy_pair", gaps=True)
    conf = tmp_path / "my_conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "gappy.yaml").write_text(f"defaults:\n  - tsv\n  - _self_\nname: gappy\npath: {folder}\n")
    summary = _train(["dataset=gappy", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "surface=true"],
                     tmp_path / "run", toy_root.parent)
    info = summary["run"]
    assert info["dataset"] == "gappy"
    present = {name for name, there in info["modalities_present"].items() if there}
    assert present == {"structure", "relation", "attribute"}  # no numeric, name or image file
    assert "image" not in info["modalities_used"] and {"name_char", "image"} <= set(info["modalities_dropped"])
    notes = info["feature_info"]["notes"]
    assert "attributes_2.tsv absent: no attribute keys for KG2" in notes
    assert "no image features: the visual modality is absent" in notes
    assert info["data_fingerprint"]["images_1"] == "absent" and info["data_fingerprint"]["names_1"] == "absent"
    coverage = info["feature_info"]["coverage"]
    assert "image" not in coverage
    identity = json.loads((tmp_path / "run" / "run_identity.json").read_text())
    assert "dataset.path" not in identity["settings"] and identity["settings"]["dataset.name"] == "gappy"


# ------------------------------------------------------------------------------------------------ fingerprints


def test_fingerprint_is_content_not_path_and_sees_optional_files(toy_root, tmp_path):
    one = derive_tsv_pair(toy_root, tmp_path / "one", gaps=True)
    two = derive_tsv_pair(toy_root, tmp_path / "two", gaps=True)
    assert input_digests(tsv_spec(one), one) == input_digests(tsv_spec(two), two)
    _write(two / "names_1.tsv", ["http://kg1.example/e00000\tsome name"])
    digests = input_digests(tsv_spec(two), two)
    assert digests["names_1"] != "absent" and input_digests(tsv_spec(one), one)["names_1"] == "absent"


# ------------------------------------------------------------------------------------------------ bad input

A, B, C = "http://a.example/", "http://b.example/", "http://rel.example/p"


def tiny_folder(tmp_path: Path, **files: str | bytes) -> Path:
    """A two-by-three-entity pair; ``files`` replace or add files (name with '.' as '_' is not needed: exact)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    default = {
        "triples_1.tsv": f"{A}x\t{C}\t{A}y\n{A}y\t{C}\t{A}z\n",
        "triples_2.tsv": f"{B}x\t{C}\t{B}y\n{B}y\t{C}\t{B}z\n",
        "links.tsv": f"{A}x\t{B}x\n{A}y\t{B}y\n",
    }
    for name, content in {**default, **files}.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def load(folder: Path, **overrides):
    return load_pair(tsv_spec(folder, **overrides), folder)


def test_tiny_pair_ids_sorted_by_uri_and_relations_shared(tmp_path):
    pair = load(tiny_folder(tmp_path, **{"triples_1.tsv": f"{A}z\t{C}\t{A}x\n{A}y\t{C}2\t{A}x\n"}))
    assert pair.uris == [f"{A}x", f"{A}y", f"{A}z", f"{B}x", f"{B}y", f"{B}z"]
    assert pair.gold_links.tolist() == [[0, 3], [1, 4]]
    assert pair.num_relations == 2 and pair.triples1.tolist() == [[2, 0, 0], [1, 1, 0]]
    assert pair.available_modalities() == {"structure": True, "relation": True, "attribute": False, "numeric": False,
                                           "image": False, "name": False}


@pytest.mark.parametrize(("files", "where", "message"), [
    ({"triples_1.tsv": f"{A}x\t{C}\t{A}y\n{A}y\t{C}\n"}, ("triples_1.tsv", 2), "expected 3 tab-separated fields"),
    ({"triples_2.tsv": f"{B}x\t{C}\t{B}y\n\t{C}\t{B}z\n"}, ("triples_2.tsv", 2), "head URI is empty"),
    ({"triples_1.tsv": f"{A}x\t{C}\t{A}y \n"}, ("triples_1.tsv", 1), "leading or trailing whitespace"),
    ({"links.tsv": f"{A}x\t{B}x\n{A}q\t{B}y\n"}, ("links.tsv", 2), "KG1 URI 'http://a.example/q' is in no triple"),
    ({"links.tsv": f"{B}x\t{A}x\n"}, ("links.tsv", 1), "the columns look swapped"),
    ({"links.tsv": f"{A}x\t{B}x\n{A}y\t{B}y\n{A}x\t{B}x\n"}, ("links.tsv", 3), "duplicate gold link"),
    ({"links.tsv": f"{A}x\t{B}x\n{A}y\t{B}x\n"}, ("links.tsv", 2), "linked on line 1"),
    ({"links.tsv": f"{A}x\t{B}x\n\ufeff{A}y\t{B}y\n"}, ("links.tsv", 2), "byte-order mark"),
    ({"links.tsv": f"{A}x\t{B}x\n".encode() + b"\xff\xfe\n"}, ("links.tsv", 2), "not valid UTF-8"),
    ({"links.tsv": ""}, ("links.tsv", None), "no gold links"),
    ({"attributes_1.tsv": f"{A}x\tcolour\tred\textra\n"}, ("attributes_1.tsv", 1), "expected 2 or 3"),
    ({"numeric_2.tsv": f"{B}x\theight\ttall\n"}, ("numeric_2.tsv", 1), "neither a finite number nor a date"),
    ({"names_1.tsv": f"{A}x\tXavier\n{A}x\tXena\n"}, ("names_1.tsv", 2), "already has a name on line 1"),
    ({"entities_2.tsv": f"{B}w\n{B}w\n"}, ("entities_2.tsv", 2), "listed again"),
])
def test_bad_lines_name_the_file_the_line_and_the_fix(tmp_path, files, where, message):
    with pytest.raises(DataFormatError, match=message) as info:
        load(tiny_folder(tmp_path, **files))
    assert Path(info.value.path).name == where[0] and info.value.line == where[1]
    assert info.value.fix


def test_bom_at_the_start_is_ignored_and_a_link_may_use_a_declared_entity_without_triples(tmp_path):
    folder = tiny_folder(tmp_path, **{"links.tsv": f"\ufeff{A}x\t{B}x\n{A}w\t{B}y\n", "entities_1.tsv": f"{A}w\n"})
    pair = load(folder)
    assert pair.uris[:4] == [f"{A}w", f"{A}x", f"{A}y", f"{A}z"] and pair.gold_links.tolist() == [[1, 4], [0, 5]]


def test_many_to_one_links_only_when_the_config_allows_them(tmp_path):
    folder = tiny_folder(tmp_path, **{"links.tsv": f"{A}x\t{B}x\n{A}y\t{B}x\n"})
    pair = load(folder, gold_one_to_one=False)
    assert len(pair.gold_links) == 2 and any("not 1-to-1" in note for note in pair.notes)


def test_optional_files_unknown_uris_are_skipped_and_recorded(tmp_path):
    folder = tiny_folder(tmp_path, **{"attributes_1.tsv": f"{A}x\tcolour\n{A}nobody\tcolour\n{B}x\tsize\n",
                                      "names_2.tsv": f"{B}x\tBix\n"})
    pair = load(folder)
    assert pair.attribute_pairs.tolist() == [[0, 0]] and pair.attribute_names == ["colour"]
    assert pair.names[3] == "Bix" and pair.names[0] is None
    assert any(note.startswith("attributes_1.tsv: 2 line(s) skipped") and "line 2" in note for note in pair.notes)


def test_images_npy_with_uri_list_safe_and_checked(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    folder = tiny_folder(tmp_path, **{"images_1_uris.tsv": f"{A}z\n{A}x\n{A}y\n"})
    np.save(folder / "images_1.npy", vectors)
    pair = load(folder)
    assert sorted(pair.image_features) == [0, 1, 2] and np.array_equal(pair.image_features[2], vectors[0])
    np.save(folder / "images_2.npy", np.ones((2, 5), dtype=np.float32))
    _write(folder / "images_2_uris.tsv", [f"{B}x", f"{B}y"])
    with pytest.raises(DataFormatError, match="one length"):
        load(folder)
    (folder / "images_2.npy").unlink()
    with pytest.raises(DataFormatError, match="no companion images_2.npy"):
        load(folder)
    (folder / "images_2_uris.tsv").unlink()
    np.save(folder / "images_1.npy", np.ones((2, 4), dtype=np.float32))
    with pytest.raises(DataFormatError, match="lists 3 URIs but images_1.npy has 2 rows"):
        load(folder)
    np.save(folder / "images_1.npy", np.array([{"x": 1}, 2, 3], dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match="not a readable .npy numeric array"):
        load(folder)  # an object array would need unpickling: refused, never loaded


def test_missing_files_names_and_settings_are_clear_errors(tmp_path):
    folder = tiny_folder(tmp_path)
    (folder / "links.tsv").unlink()
    with pytest.raises(DataFormatError, match="links.tsv missing"):
        resolve_root(tsv_spec(folder), data_dir=None, cache_dir=None)
    with pytest.raises(DataFormatError, match="does not exist"):
        resolve_root(tsv_spec(tmp_path / "nowhere"), data_dir=None, cache_dir=None)
    with pytest.raises(ValueError, match="dataset.path is not set"):
        tsv_spec("???")
    with pytest.raises(ValueError, match="not a safe file name"):
        tsv_spec(folder, name="../escape")
    with pytest.raises(ValueError, match="unknown keys \\[.images.\\]"):
        tsv_spec(folder, images="pkls/x.pkl")
    with pytest.raises(ValueError, match="dataset.format='csv' is unknown"):
        DatasetSpec.from_config({"format": "csv", "name": "x", "path": str(folder)})
