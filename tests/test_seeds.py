"""Unsupervised seed generators, stage by stage: matching, fusion, quality, pivots, PSQE Stages I-III, cache."""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytest
import torch

from mmea_lightning.data.features import FeatureSet, FeatureSettings, build_features
from mmea_lightning.data.loader import load_pair
from mmea_lightning.data.toy import generate_toy_pair
from mmea_lightning.eval.decoding import greedy_one_to_one
from mmea_lightning.models.encoders.seed_tuning import SeedTuningModel
from mmea_lightning.models.losses.icl import ICLLoss
from mmea_lightning.seeds.cluster_sampling import ClusterSampling, cluster_quotas
from mmea_lightning.seeds.correction import error_correction, unchecked_pairs
from mmea_lightning.seeds.fusion import FusedFeatures, View, raw_fusion, shared_columns
from mmea_lightning.seeds.global_sampling import GlobalSampling
from mmea_lightning.seeds.matching import greedy_matching
from mmea_lightning.seeds.neighbour_expansion import NeighbourExpansion, expansion_fusion
from mmea_lightning.seeds.numeric_values import numeric_value_table, value_tokens
from mmea_lightning.seeds.pivot import PivotSeeds
from mmea_lightning.seeds.psqe import PSQESeeds
from mmea_lightning.seeds.quality import graph_coverage, seed_precision

from .test_readers import spec

FAST_STAGE2 = {"epochs": 5, "model": partial(SeedTuningModel, dim=32), "loss": partial(ICLLoss, chunk_size=200)}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = generate_toy_pair(tmp_path_factory.mktemp("toy") / "toy")
    pair = load_pair(spec("toy"), root)
    return pair, build_features(pair, FeatureSettings())


def without(features: FeatureSet, *names: str) -> FeatureSet:
    """``features`` without the modalities ``names`` (e.g. no images, as the real data); ``numeric_value`` drops the
    raw numeric triples."""
    raw = {"numeric_entities": None, "numeric_values": None} if "numeric_value" in names else {}
    return dataclasses.replace(features, modalities={k: v for k, v in features.modalities.items() if k not in names},
                               masks={k: v for k, v in features.masks.items() if k not in names}, **raw)


def precision(links, pair) -> float:
    return seed_precision(links, pair.gold_links)["precision"]


# ------------------------------------------------------------------------------------------------ matching


@pytest.mark.parametrize("shape", [(30, 40), (40, 30), (25, 25)])
def test_greedy_matching_equals_the_dense_greedy_decoder(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    sim = torch.randint(0, 6, shape, generator=gen).float()  # many ties: the order must match exactly
    expected = greedy_one_to_one(sim)
    pairs, scores = greedy_matching(lambda rows: sim[rows], *shape, k=2)  # k=2 forces refills
    got = pairs[torch.argsort(pairs[:, 0])]
    assert torch.equal(got, expected)
    assert torch.all(scores[:-1] >= scores[1:])  # pick order: score descending
    assert torch.equal(scores, sim[pairs[:, 0], pairs[:, 1]])


def test_greedy_matching_limit_and_floor():
    sim = torch.tensor([[0.9, 0.8, 0.1], [0.85, 0.2, 0.0], [0.3, 0.7, 0.6]])
    pairs, scores = greedy_matching(lambda rows: sim[rows], 3, 3, limit=2)
    assert pairs.tolist() == [[0, 0], [2, 1]] and scores.tolist() == pytest.approx([0.9, 0.7])
    pairs, _ = greedy_matching(lambda rows: sim[rows], 3, 3, min_score=0.65)
    assert pairs.tolist() == [[0, 0], [2, 1]]  # (1, 2) scores 0.0: below the floor
    pairs, _ = greedy_matching(lambda rows: sim[rows], 3, 3, min_score=0.95)
    assert pairs.shape == (0, 2)


# ------------------------------------------------------------------------------------------------ fusion, quality


def test_fused_similarity_is_the_weighted_cosine_and_masks_remove_evidence():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 4, generator=gen), torch.randn(6, 3, generator=gen)
    an, bn = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    fused = FusedFeatures([View("a", 3.0, an), View("b", 1.0, bn)])
    assert fused.weights() == {"a": 0.75, "b": 0.25}
    expected = 0.75 * an[:3] @ an[3:].t() + 0.25 * bn[:3] @ bn[3:].t()
    assert torch.allclose(fused.similarity(np.arange(3), np.arange(3, 6)), expected, atol=1e-6)
    vectors = torch.from_numpy(fused.vectors())
    assert torch.allclose(vectors[:3] @ vectors[3:].t(), expected, atol=1e-6)


def test_raw_fusion_primary_slot_surface_and_shared_columns(toy):
    pair, fs = toy
    weights = {"primary": 0.8, "relation": 0.1, "attribute": 0.1}
    fused, primary, left_out = raw_fusion(fs, ["image", "name_char"], weights, surface=False)
    # the toy graphs (like every real pair) have disjoint relation ids and attribute keys: no cross-graph evidence
    assert primary == "image" and fused.weights() == {"image": 1.0}
    assert set(left_out) == {"relation", "attribute"} and "no feature column" in left_out["relation"]
    no_image = without(fs, "image")
    with pytest.raises(ValueError, match="no modality compares entities across the two graphs"):
        raw_fusion(no_image, ["image", "name_char"], weights, surface=False)  # names only with surface
    fused, primary, _ = raw_fusion(no_image, ["image", "name_char"], weights, surface=True)
    assert primary == "name_char" and fused.weights() == {"name_char": 1.0}
    with pytest.raises(ValueError, match="surface=false"):
        raw_fusion(fs, ["image"], {"primary": 0.8, "name_char": 0.2}, surface=False)
    # an entity without an image has no visual evidence (a zero row), not its random stand-in
    view = raw_fusion(fs, ["image"], {"primary": 1.0}, surface=False)[0].views[0]
    assert view.name == "image" and torch.all(_dense_rows(view.table)[~fs.masks["image"]] == 0)


def test_shared_columns_keep_what_both_graphs_use():
    table = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 3.0, 1.0, 0.0], [0.0, 0.0, 0.0, 5.0]])
    kg1, kg2 = torch.tensor([0, 1]), torch.tensor([2, 3])
    assert shared_columns(table, kg1, kg2).tolist() == [2]
    assert shared_columns(table, kg1, kg2, mask=torch.tensor([True, True, False, True])).tolist() == []


def _dense_rows(table):
    return torch.from_numpy(table.toarray()) if hasattr(table, "toarray") else table


def test_precision_and_graph_coverage_by_hand():
    gold = np.array([[0, 3], [1, 4], [2, 5]])
    assert seed_precision(np.array([[0, 3], [1, 5]]), gold) == {"correct": 1, "precision": 0.5}
    # path 0-1-2 in KG1, 3-4 and isolated 5 in KG2: 3 undirected edges, 6 entities
    edges = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]])
    cov = graph_coverage(np.array([[0, 3]]), edges, 6)
    # seed entities 0 and 3, no seed neighbours: scattered 2; edges touched: 0-1 and 3-4
    assert (cov["aggregated"], cov["scattered"], cov["edges_covered"]) == (0, 2, 2)
    assert cov["coverage"] == pytest.approx(0 / 12 + 2 / 6 + 2 / 6)
    cov = graph_coverage(np.array([[0, 3], [1, 4]]), edges, 6)
    assert (cov["aggregated"], cov["scattered"], cov["edges_covered"]) == (4, 0, 3)
    assert cov["coverage"] == pytest.approx(4 / 12 + 3 / 6)
    full = graph_coverage(np.array([[0, 3], [1, 4], [2, 5]]), edges, 6)  # every entity; 5 is isolated
    assert full["coverage"] == pytest.approx(1 + 1 / 12)
    assert graph_coverage(np.array([[0, 2], [1, 3]]), torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]), 4)["coverage"] == 1


# ------------------------------------------------------------------------------------------------ pivots


def test_pivots_pick_images_then_names_and_say_when_there_is_nothing(toy):
    pair, fs = toy
    generation = PivotSeeds(n=50, cache=False).generate(fs)
    links = generation.links
    assert generation.info["modality"] == "image" and links.shape == (50, 2)
    assert len(set(links[:, 0])) == len(set(links[:, 1])) == 50
    assert fs.masks["image"][links.ravel()].all()  # only entities with a real image
    assert precision(links, pair) > 0.5  # toy images carry the alignment
    named = PivotSeeds(n=50, surface=True, cache=False).generate(without(fs, "image"))
    assert named.info["modality"] == "name_char" and precision(named.links, pair) > 0.5
    valued = PivotSeeds(n=50, cache=False).generate(without(fs, "image"))  # no names without surface: raw values
    # the toy graphs perturb every value independently, so few tokens match exactly (real pairs share many:
    # tests/test_seeds_run.py); chance is 1/600
    assert valued.info["modality"] == "numeric_value" and precision(valued.links, pair) > 0.1
    with pytest.raises(ValueError, match="names count only with surface=true"):
        PivotSeeds(n=50, cache=False).generate(without(fs, "image", "numeric_value"))
    with pytest.raises(ValueError, match="seeds=pivot needs one of"):
        PivotSeeds(n=50, surface=True, cache=False).generate(without(fs, "image", "name_char", "numeric_value"))


def test_similarity_ties_are_not_broken_by_entity_id(toy):
    """In DBP15K the gold-linked entities have the lowest ids: tie-breaking by id would favour gold links."""
    pair, fs = toy
    flat = dataclasses.replace(fs, modalities={**fs.modalities, "image": torch.ones(fs.num_entities, 4)},
                               masks={k: v for k, v in fs.masks.items() if k != "image"})  # every pair ties at 1.0
    links = PivotSeeds(n=50, cache=False).generate(flat).links
    lowest1, lowest2 = np.sort(fs.kg1_ids.numpy())[:50], np.sort(fs.kg2_ids.numpy())[:50]
    assert len(np.intersect1d(links[:, 0], lowest1)) < 25 and len(np.intersect1d(links[:, 1], lowest2)) < 25
    other = PivotSeeds(n=50, cache=False, seed=1).generate(flat).links
    assert not np.array_equal(links, other)  # the tie order comes from the seed


# ------------------------------------------------------------------------------------------------ PSQE stages


def test_cluster_quotas_are_proportional_and_sum_to_n():
    quotas = cluster_quotas(np.array([50, 30, 20]), 10)
    assert quotas.tolist() == [5, 3, 2]
    quotas = cluster_quotas(np.array([1, 1, 1]), 10)
    assert quotas.sum() == 10 and quotas.max() - quotas.min() <= 1


def test_stage1_samples_inside_clusters_with_quotas(toy):
    pair, fs = toy
    fused, _, _ = raw_fusion(fs, ["image"], {"primary": 0.8, "relation": 0.1, "attribute": 0.1}, surface=False)
    stage = ClusterSampling(clusters=4, n_init=1)
    links, info = stage.run(fused, fs, n=80, seed=0)
    labels = stage.cluster(fused, fs, seed=0)
    assert len(links) == 80 and info["unfilled"] == 0
    assert (labels[links[:, 0]] == labels[links[:, 1]]).all()  # both ends in the same cluster
    assert [c["picked"] for c in info["clusters"]] == [c["quota"] for c in info["clusters"]]
    sizes = np.bincount(labels[labels >= 0])
    assert [c["quota"] for c in info["clusters"]] == cluster_quotas(sizes, 80).tolist()
    assert len(set(links[:, 0])) == len(set(links[:, 1])) == 80
    assert precision(links, pair) > 0.5


def test_stage1_returns_seeds_most_similar_first_over_all_clusters(toy):
    _, fs = toy
    fused, _, _ = raw_fusion(fs, ["image"], {"primary": 0.8, "relation": 0.1, "attribute": 0.1}, surface=False)
    links, _ = ClusterSampling(clusters=4, n_init=1).run(fused, fs, n=80, seed=0)
    scores = (fused.similarity(links[:, 0], links[:, 1])).diagonal().numpy()
    assert (np.diff(scores) <= 1e-6).all()  # Stage III's schedule gives the loosest threshold to the first


def test_stage1_can_leave_entities_without_evidence_out_of_clusters_and_quotas(toy):
    """Zero rows can never be paired; ``evidence_only`` keeps them out of k-means and the quotas."""
    _, fs = toy
    fused, _, _ = raw_fusion(fs, ["image"], {"primary": 1.0}, surface=False)
    blank = np.concatenate([fs.kg1_ids.numpy()[:40], fs.kg2_ids.numpy()[:40]])
    table = fused.views[0].table.clone()
    table[torch.as_tensor(blank)] = 0.0
    fused = FusedFeatures([View("image", 1.0, table)])
    stage = ClusterSampling(clusters=3, n_init=1, evidence_only=True)
    labels = stage.cluster(fused, fs, seed=0)
    everyone = np.concatenate([fs.kg1_ids.numpy(), fs.kg2_ids.numpy()])
    evidence = fused.has_evidence(everyone)
    assert (labels[blank] == -1).all() and ((labels[everyone] >= 0) == evidence).all()
    links, info = stage.run(fused, fs, n=60, seed=0)
    assert info["no_evidence"] == int((~evidence).sum()) >= 80 and info["unfilled"] == 0 and len(links) == 60
    assert not np.isin(links, blank).any()
    literal = ClusterSampling(clusters=3, n_init=1)  # the default: every entity is clustered, as the paper
    assert (literal.cluster(fused, fs, seed=0)[blank] >= 0).all()
    assert literal.run(fused, fs, n=60, seed=0)[1]["no_evidence"] == int((~evidence).sum())
    table[:] = 0.0
    with pytest.raises(ValueError, match="no entity has any evidence"):
        stage.cluster(FusedFeatures([View("image", 1.0, table)]), fs, seed=0)


def test_error_correction_drops_pairs_whose_partner_is_not_the_best():
    x = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.0, 1.0], [0.7, 0.7]]),
                                      dim=1)
    fused = FusedFeatures([View("x", 1.0, x)])
    keep = error_correction(np.array([[0, 2], [1, 3]]), fused)
    assert keep.tolist() == [True, True]
    keep = error_correction(np.array([[0, 3], [1, 2]]), fused)  # swapped: both partners beaten
    assert keep.tolist() == [False, False]
    keep = error_correction(np.array([[0, 2], [1, 4]]), fused)  # 1's partner 4 (cos 0.71) beats 2 (cos 0.10)
    assert keep.tolist() == [True, True]
    # row 0: its partner 4 (cos 0.71) loses to column 0 (cos 1.0), another seed's partner; rows 1, 2 keep theirs
    keep = error_correction(np.array([[0, 4], [1, 3], [2, 0]]), fused)
    assert keep.tolist() == [False, True, True]


def test_stage2_tunes_samples_globally_and_corrects(toy):
    pair, fs = toy
    fs = without(fs, "image")  # like the real data
    fused, _, _ = raw_fusion(fs, ["name_char"], {"primary": 1.0}, surface=True)
    seeds = pair.gold_links[:40]  # a stand-in Stage-I output (this unit test may use gold links as input)
    stage = GlobalSampling(**{**FAST_STAGE2, "epochs": 15}, new_pairs=30)
    # no primary modality: the GAT runs over the projected relation + attribute tables
    links, extra, info = stage.run(fs, fused, None, ["relation", "attribute"],
                                   {"primary": 0.8, "relation": 0.1, "attribute": 0.1}, seeds, n=100, seed=0)
    assert info["loss_last"] < info["loss_first"]
    assert info["sampled"] == 30 and info["before_correction"] == 70
    assert len(links) == 70 - info["removed_by_correction"]
    assert len(set(links[:, 0])) == len(links) and len(set(links[:, 1])) == len(links)
    assert error_correction(links, fused).all()  # survivors still pass: removing pairs only lowers row maxima
    embeddings = stage.embed(fs, None, ["relation", "attribute"], extra["state_dict"], seed=0)
    assert set(embeddings) == {"graph", "relation", "attribute"} and embeddings["graph"].shape == (fs.num_entities, 32)


def test_stage3_expands_through_neighbours_above_eta(toy):
    pair, fs = toy
    fs = without(fs, "image")  # the released code's Stage III does nothing without images; ours must work
    weights = {"primary": 0.8, "relation": 0.1, "attribute": 0.1}
    fused_raw, _, _ = raw_fusion(fs, ["name_char"], {"primary": 1.0}, surface=True)
    seeds = pair.gold_links[:60]
    # tuned embeddings that know the alignment (the gold partner gets the same vector): Stage III must find the
    # neighbours' partners through the graph view alone
    emb = torch.randn(fs.num_entities, 16, generator=torch.Generator().manual_seed(0))
    emb[pair.gold_links[:, 1]] = emb[pair.gold_links[:, 0]]
    embeddings = {"graph": emb, "relation": torch.ones(fs.num_entities, 4), "attribute": torch.ones(fs.num_entities, 4)}
    fused = expansion_fusion(fused_raw, None, embeddings, weights)
    assert fused.weights()["graph_tuned"] == pytest.approx(0.8)
    stage = NeighbourExpansion(eta_start=0.85, eta_end=0.9, per_pair_start=3, per_pair_end=1, correction=False)
    links, info = stage.run(fs, fused_raw, fused, seeds)
    added = links[60:]
    assert info["added"] == len(added) > 20
    assert precision(added, pair) > 0.9
    src, dst = fs.edge_index.numpy()
    neighbours = set(zip(src.tolist(), dst.tolist()))
    for a, b in added.tolist():  # every new pair is a neighbour pair of some seed pair
        assert any((a, s) in neighbours and (b, t) in neighbours for s, t in seeds.tolist())
    assert stage.schedule(0, 60) == (0.85, 3) and stage.schedule(30, 60) == (pytest.approx(0.875), 2)


@pytest.mark.parametrize("drop", [(), ("image",)])
def test_psqe_runs_every_stage_with_or_without_images_and_caches(toy, tmp_path, drop):
    pair, fs = toy
    fs = without(fs, *drop)  # without images, the names take the primary slot (surface=true), as on DBP15K
    psqe = PSQESeeds(n=60, seed=0, surface=True, cluster_sampling=ClusterSampling(clusters=3, n_init=1),
                     global_sampling=GlobalSampling(**FAST_STAGE2),
                     neighbour_expansion=NeighbourExpansion(eta_start=0.5, eta_end=0.6))
    generation = psqe.generate(fs, cache_dir=tmp_path)
    assert [s.name for s in generation.stages] == ["stage1", "stage2", "stage3"]
    assert generation.info["primary"] == ("name_char" if drop else "image")
    assert generation.info["heads"] == ["relation", "attribute"]
    for stage in generation.stages:
        assert not stage.report["cached"] and stage.report["count"] == len(stage.links) > 0
        assert 0 < stage.report["coverage"] <= 1.5
    assert generation.stages[2].report["added"] > 0
    again = psqe.generate(fs, cache_dir=tmp_path)
    assert all(s.report["cached"] for s in again.stages)
    assert all(np.array_equal(a.links, b.links) for a, b in zip(generation.stages, again.stages))
    psqe.neighbour_expansion.eta_start = 0.55  # a Stage-III setting: only Stage III recomputes
    third = psqe.generate(fs, cache_dir=tmp_path)
    assert [s.report["cached"] for s in third.stages] == [True, True, False]


def test_psqe_without_images_and_names_runs_on_the_raw_values(toy, tmp_path):
    """The MMKG pairs here: no images, names only with surface -> the numeric values take the primary slot."""
    pair, fs = toy
    psqe = PSQESeeds(n=60, seed=0, cluster_sampling=ClusterSampling(clusters=3, n_init=1),
                     global_sampling=GlobalSampling(**FAST_STAGE2),
                     neighbour_expansion=NeighbourExpansion(eta_start=0.5, eta_end=0.6))
    generation = psqe.generate(without(fs, "image"), cache_dir=tmp_path)
    assert generation.info["primary"] == "numeric_value"
    assert generation.info["raw_weights"] == {"numeric_value": 1.0}  # relation/attribute: disjoint vocabularies
    assert [s.name for s in generation.stages] == ["stage1", "stage2", "stage3"]
    assert all(len(s.links) > 0 for s in generation.stages)
    assert precision(generation.stages[0].links, pair) > 0.1  # chance: 1/600 (see the pivot test)


def test_numeric_value_table_by_hand():
    """Tokens at 4 significant digits, only tokens of both graphs, binary bags, idf, damping by the norm quantile."""
    # KG1 = 0, 1, 2; KG2 = 3, 4, 5
    ents = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4, 5])
    vals = torch.tensor([54.20867775, 1961.0, 1961.0, 7.0, 54.21, 1961.0, 1961.0, 1961.0, 8.0], dtype=torch.float64)
    fs = FeatureSet(num_entities=6, kg1_ids=torch.tensor([0, 1, 2]), kg2_ids=torch.tensor([3, 4, 5]),
                    edge_index=torch.zeros(2, 0, dtype=torch.long), edge_weight=torch.zeros(0),
                    adjacency=torch.zeros(6, 6), numeric_entities=ents, numeric_values=vals)
    table = numeric_value_table(fs, evidence_quantile=1.0).toarray()
    assert table.shape == (6, 2)  # '1961' and '54.21' are shared; 7 and 8 are one graph's only
    idf_year, idf_coord = np.log(6 / 4), np.log(6 / 2)  # 1961: entities 0, 1, 3, 4; 54.21: 0, 3
    rich = np.hypot(idf_year, idf_coord)  # the largest norm: c = max with quantile 1
    year_col = int(np.argmax(table[1]))
    assert table[1, year_col] == pytest.approx(idf_year / rich) and table[1].sum() == pytest.approx(idf_year / rich)
    assert np.allclose(table[0] @ table[3], 1.0, atol=1e-6)  # same two values: cosine 1
    assert table[1] @ table[4] == pytest.approx((idf_year / rich) ** 2)  # one common year: damped, not 1
    assert not table[2].any() and not table[5].any()
    assert value_tokens(np.array([-0.0, 1e-7, 12345678.0])).tolist() == ["0", "1e-07", "1.235e+07"]
    nothing = dataclasses.replace(fs, numeric_values=torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8, 9], dtype=torch.float64))
    assert numeric_value_table(nothing) is None  # no value in both graphs


def test_psqe_without_any_comparable_modality_is_a_clear_error(toy):
    _, fs = toy
    with pytest.raises(ValueError, match="need images .* names \\(surface=true\\)"):
        PSQESeeds(n=60, stages=1, cache=False).generate(without(fs, "image", "numeric_value"))


def test_numeric_value_pivots_on_a_real_mmkg_pair(data_dir):
    """FB15K-YAGO15K has no images and (without surface) no names; its numeric values alone give precise pivots."""
    from mmea_lightning.data.features import graph_edges

    pair = load_pair(spec("fbyg15k"), data_dir)
    edge_index, weight = graph_edges(pair)
    fs = FeatureSet(num_entities=pair.num_entities, kg1_ids=torch.from_numpy(pair.kg1_ids),
                    kg2_ids=torch.from_numpy(pair.kg2_ids), edge_index=torch.from_numpy(edge_index),
                    edge_weight=torch.from_numpy(weight), adjacency=torch.zeros(0),
                    numeric_entities=torch.from_numpy(pair.numeric_entities),
                    numeric_values=torch.from_numpy(pair.numeric_values))
    generation = PivotSeeds(n=500, cache=False).generate(fs)
    assert generation.info["modality"] == "numeric_value" and len(generation.links) == 500
    assert precision(generation.links, pair) > 0.9  # measured 0.99 (chance: 1 / 15,404)


def test_unchecked_pairs_are_the_ones_without_raw_evidence():
    table = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # entity 1 has no evidence
    fused = FusedFeatures([View("x", 1.0, table)])
    assert fused.has_evidence(np.arange(4)).tolist() == [True, False, True, True]
    links = np.array([[0, 2], [1, 3]])
    assert error_correction(links, fused).tolist() == [True, True]  # 1 -> 3 scores 0 = its row max: kept
    assert unchecked_pairs(links, fused) == 1


def test_psqe_weights_are_part_of_the_cache_key(toy, tmp_path):
    """Stage II weights its heads by ``weights`` even when the raw fusion leaves them out: a new weight recomputes."""
    _, fs = toy
    stage2 = GlobalSampling(**FAST_STAGE2)
    first = PSQESeeds(n=60, seed=0, stages=2, cluster_sampling=ClusterSampling(clusters=3, n_init=1),
                      global_sampling=stage2).generate(fs, cache_dir=tmp_path)
    other = PSQESeeds(n=60, seed=0, stages=2, weights={"primary": 0.5, "relation": 0.25, "attribute": 0.25},
                      cluster_sampling=ClusterSampling(clusters=3, n_init=1),
                      global_sampling=stage2).generate(fs, cache_dir=tmp_path)
    assert first.info["raw_weights"] == other.info["raw_weights"] == {"image": 1.0}
    assert not any(s.report["cached"] for s in other.stages)
