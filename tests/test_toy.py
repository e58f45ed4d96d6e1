"""Tests of the generated toy pair: layout, formats, determinism, idempotence/atomicity and learnability."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from mmea_lightning.data.toy import OWNER_MARKER, TOY_FOLDER, NotGeneratedHere, generate_toy_pair

PAIR_FILES = ["ent_ids_1", "ent_ids_2", "triples_1", "triples_2", "rel_ids", "ill_ent_ids",
              "training_attrs_1", "training_attrs_2"]
OTHER_FILES = ["mmkb/TOYA/TOYA_NumericalTriples.txt", "mmkb/TOYB/TOYB_NumericalTriples.txt",
               "TOY/translated_ent_name/toy.json", "pkls/TOY_id_img_feature_dict.pkl"]
ALL_FILES = [f"{TOY_FOLDER}/{f}" for f in PAIR_FILES] + OTHER_FILES


def _rows(path: Path) -> list[list[str]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [line.split("\t") for line in text.splitlines()]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_toy_pair(tmp_path_factory.mktemp("toy") / "root")


def test_files_exist(toy: Path) -> None:
    for rel in ALL_FILES:
        assert (toy / rel).is_file(), rel
    assert not [p for p in toy.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_formats_parse(toy: Path) -> None:
    pair = toy / TOY_FOLDER
    ents = [_rows(pair / f"ent_ids_{g}") for g in (1, 2)]
    ids = [[int(r[0]) for r in rows] for rows in ents]
    n1, n2 = len(ids[0]), len(ids[1])
    assert ids[0] == list(range(n1)) and ids[1] == list(range(n1, n1 + n2))
    assert all(r[1].startswith("http://toy-a.org/resource/") for r in ents[0])
    assert all(r[1].startswith("http://toy-b.org/entity/Q") for r in ents[1])
    uris = {r[1] for rows in ents for r in rows}
    assert len(uris) == n1 + n2

    rel_ids = {int(r[0]) for r in _rows(pair / "rel_ids")}
    assert rel_ids == set(range(len(rel_ids)))
    rels_used = []
    for g, (lo, hi) in enumerate([(0, n1), (n1, n1 + n2)], start=1):
        triples = np.array(_rows(pair / f"triples_{g}"), dtype=np.int64)
        assert triples.shape[1] == 3 and len(triples) > 2 * (hi - lo)
        assert ((triples[:, [0, 2]] >= lo) & (triples[:, [0, 2]] < hi)).all()
        assert set(triples[:, 1].tolist()) <= rel_ids
        rels_used.append(set(triples[:, 1].tolist()))
    assert not rels_used[0] & rels_used[1]  # relation ids are global and distinct per graph

    links = np.array(_rows(pair / "ill_ent_ids"), dtype=np.int64)
    assert links.shape == (400, 2)
    assert len(set(links[:, 0].tolist())) == len(links) == len(set(links[:, 1].tolist()))
    assert ((links[:, 0] < n1) & (links[:, 1] >= n1) & (links[:, 1] < n1 + n2)).all()
    assert not (np.diff(links[:, 0]) > 0).all()  # shuffled

    for g in (1, 2):
        for row in _rows(pair / f"training_attrs_{g}"):
            assert row[0] in uris and len(row) >= 2
    for tag in ("A", "B"):
        rows = _rows(toy / "mmkb" / f"TOY{tag}" / f"TOY{tag}_NumericalTriples.txt")
        assert rows and all(len(r) == 3 and r[0] in uris for r in rows)
        values = [r[2] for r in rows]
        assert any("-##-##" in v for v in values) and any(v.count("-") == 2 and "#" not in v for v in values)
        for v in values:
            if "-" not in v[1:]:
                float(v)

    names = json.loads((toy / "TOY/translated_ent_name/toy.json").read_text(encoding="utf-8"))
    assert [i for i, _ in names] == list(range(n1 + n2))
    assert all(tokens and all(t == t.lower() and t.isalpha() for t in tokens) for _, tokens in names)


def test_determinism(tmp_path: Path) -> None:
    a = _snapshot(generate_toy_pair(tmp_path / "a", seed=3, num_aligned=80, num_unaligned=10))
    b = _snapshot(generate_toy_pair(tmp_path / "b", seed=3, num_aligned=80, num_unaligned=10))
    c = _snapshot(generate_toy_pair(tmp_path / "c", seed=4, num_aligned=80, num_unaligned=10))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_idempotent_and_replaces_incomplete_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    generate_toy_pair(root, num_aligned=50, num_unaligned=5)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate_toy_pair(root, num_aligned=50, num_unaligned=5) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes

    broken = tmp_path / "broken"  # a root this module generated, then damaged
    (broken / TOY_FOLDER).mkdir(parents=True)
    (broken / OWNER_MARKER).write_text("")
    (broken / "stale.txt").write_text("half-written\n")
    generate_toy_pair(broken, num_aligned=50, num_unaligned=5)
    assert not (broken / "stale.txt").exists()
    assert _snapshot(broken) == _snapshot(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "root"]

    generate_toy_pair(root, seed=1, num_aligned=50, num_unaligned=5, overwrite=True)
    assert _snapshot(root) != _snapshot(broken)


def test_images_learnable_and_some_missing(toy: Path) -> None:
    with open(toy / "pkls/TOY_id_img_feature_dict.pkl", "rb") as fh:
        images = pickle.load(fh)
    n1 = len(_rows(toy / TOY_FOLDER / "ent_ids_1"))
    n = n1 + len(_rows(toy / TOY_FOLDER / "ent_ids_2"))
    assert all(isinstance(k, int) and v.dtype == np.float32 and v.shape == (64,) for k, v in images.items())
    assert 0.1 * n < n - len(images) < 0.3 * n  # about 20% missing

    links = np.array(_rows(toy / TOY_FOLDER / "ill_ent_ids"), dtype=np.int64)
    both = [(x, y) for x, y in links.tolist() if x in images and y in images]
    candidates = [i for i in range(n1, n) if i in images]
    target = np.stack([images[i] for i in candidates])
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    query = np.stack([images[x] for x, _ in both])
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    best = np.asarray(candidates)[np.argmax(query @ target.T, axis=1)]
    hits = float(np.mean(best == np.array([y for _, y in both])))
    assert hits > 0.3, hits


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
def test_never_replaces_a_folder_it_did_not_create(tmp_path: Path, overwrite: bool) -> None:
    """Issue 27, defect 1: a user's folder (here a fake mmkg root) is never moved aside, replaced or deleted."""
    user = tmp_path / "mmkg"
    (user / "DBP15K" / "zh_en").mkdir(parents=True)
    (user / "DBP15K" / "zh_en" / "ent_ids_1").write_text("0\thttp://a\n")
    before = _tree(user)
    with pytest.raises(NotGeneratedHere, match="did not create"):
        generate_toy_pair(user, num_aligned=20, num_unaligned=2, overwrite=overwrite)
    assert _tree(user) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mmkg"]  # no temporary folder left behind


def test_fills_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    generate_toy_pair(tmp_path / "empty", num_aligned=20, num_unaligned=2)
    assert (tmp_path / "empty" / TOY_FOLDER / "ill_ent_ids").is_file() and (tmp_path / "empty" / OWNER_MARKER).is_file()
