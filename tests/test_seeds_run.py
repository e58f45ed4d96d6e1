"""Unsupervised runs end to end (``seeds=psqe``, ``seeds=pivot`` through ``train.run``) and the no-leakage proof."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.utils import instantiate

from mmea_lightning.data.loader import load_pair
from mmea_lightning.data.splits import split_links
from mmea_lightning.data.toy import TOY_FOLDER, generate_toy_pair
from mmea_lightning.lightning.datamodule import AlignmentDataModule
from mmea_lightning.models.encoders.seed_tuning import SeedTuningModel
from mmea_lightning.models.losses.icl import ICLLoss
from mmea_lightning.seeds.cluster_sampling import ClusterSampling
from mmea_lightning.seeds.global_sampling import GlobalSampling
from mmea_lightning.seeds.neighbour_expansion import NeighbourExpansion
from mmea_lightning.seeds.psqe import PSQESeeds
from mmea_lightning.train import run

from .conftest import CONF_DIR, make_config
from .test_readers import spec

TINY = ["model.max_epochs=8", "model.check_val_every_n_epoch=4", "seeds.n=120"]
PSQE_TINY = ["seeds=psqe", *TINY, "seeds.cluster_sampling.n_init=1", "seeds.global_sampling.epochs=5",
             "seeds.global_sampling.model.dim=32", "seeds.neighbour_expansion.eta_start=0.5",
             "seeds.neighbour_expansion.eta_end=0.6"]


def toy_test_links(cache_dir) -> np.ndarray:
    pair = load_pair(spec("toy"), cache_dir / "toy")
    return split_links(pair.gold_links, 0.3, 0.1, 0).test


def test_psqe_end_to_end(tmp_path, cache_dir):
    summary = run(make_config(tmp_path, cache_dir, PSQE_TINY))
    info = summary["run"]
    split = info["split"]
    assert info["seeds"] == "psqe" and split["mode"] == "unsupervised" and split["test_links"] == "split"
    assert [row["stage"] for row in info["seed_quality"]] == ["stage1", "stage2", "stage3"]
    for row in info["seed_quality"]:
        assert row["count"] > 0 and 0 <= row["precision"] <= 1 and row["coverage"] > 0 and row["seconds"] >= 0
    stage3 = info["seed_quality"][-1]
    assert split["pseudo_seeds"] == stage3["count"] == split["train"] + split["valid"]
    assert split["valid"] == round(0.1 * stage3["count"]) and info["num_seed_links"] == split["train"]
    # validation: held-out pseudo seeds; test: exactly the gold-seed run's test links
    served = np.loadtxt(tmp_path / "seeds" / "stage3_links.tsv", dtype=np.int64).reshape(-1, 2)
    valid = np.loadtxt(tmp_path / "split" / "valid_links.tsv", dtype=np.int64).reshape(-1, 2)
    train = np.loadtxt(tmp_path / "split" / "train_links.tsv", dtype=np.int64).reshape(-1, 2)
    assert {tuple(x) for x in np.concatenate([train, valid]).tolist()} == {tuple(x) for x in served.tolist()}
    test = np.loadtxt(tmp_path / "split" / "test_links.tsv", dtype=np.int64)
    assert np.array_equal(test, toy_test_links(cache_dir))
    report = json.loads((tmp_path / "seeds" / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["stage1", "stage2", "stage3"]
    assert report["info"]["primary"] == "image" and "precision" in (tmp_path / "seeds" / "report.txt").read_text()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["run"]["seed_quality"] == info["seed_quality"]
    assert saved["test/mrr"] > 0.25  # chance ~0.02: the pseudo seeds train a useful model


def test_pivot_end_to_end_tested_on_all_gold_links(tmp_path, cache_dir):
    summary = run(make_config(tmp_path, cache_dir, ["seeds=pivot", *TINY, "seeds.test_links=all"]))
    info = summary["run"]
    assert info["seeds"] == "pivot" and info["split"]["test"] == 400 and info["split"]["test_links"] == "all"
    assert [row["stage"] for row in info["seed_quality"]] == ["pivot"]
    assert info["seed_quality"][0]["count"] == 120 and info["seed_quality"][0]["precision"] > 0.5
    assert info["split"]["pseudo_seed_info"]["modality"] == "image"
    assert summary["test/mrr"] > 0.25
    # pseudo seeds: the final weights are tested, not the first validation check that saturates
    assert info["test_checkpoint"] == {"policy": "last", "weights": str(tmp_path / "checkpoints" / "last.ckpt")}
    assert info["perf"]["epochs_run"] == 8  # the last checkpoint holds the final epoch's weights
    cfg = make_config(tmp_path / "again", cache_dir, ["seeds=pivot", *TINY, "seeds.test_links=all", "model=mclea"])
    again = instantiate(cfg.data, _convert_="object")
    again.setup("fit")
    assert again.seed_quality[0]["cached"]  # another aligner's run reuses the cached seeds
    assert np.array_equal(again.seed_links.numpy(), np.loadtxt(tmp_path / "split" / "train_links.tsv", dtype=np.int64))


def test_gold_links_are_never_read_to_build_seeds(tmp_path):
    """Seeds are identical when the gold file is shuffled and cut to a third (features rebuilt, caches apart)."""
    original = generate_toy_pair(tmp_path / "a")
    altered = tmp_path / "b"
    shutil.copytree(original, altered)
    gold = altered / TOY_FOLDER / "ill_ent_ids"
    lines = gold.read_text().splitlines()
    kept = [lines[i] for i in np.random.default_rng(1).permutation(len(lines))[: len(lines) // 3]]
    gold.write_text("\n".join(kept) + "\n")
    toy = yaml.safe_load((Path(CONF_DIR) / "dataset" / "toy.yaml").read_text())
    links, tests = [], []
    for name, root in (("a", original), ("b", altered)):
        seeds = PSQESeeds(n=60, seed=0, cluster_sampling=ClusterSampling(clusters=3, n_init=1),
                          global_sampling=GlobalSampling(partial(SeedTuningModel, dim=16),
                                                         partial(ICLLoss, chunk_size=2000), epochs=3),
                          neighbour_expansion=NeighbourExpansion(eta_start=0.5, eta_end=0.6))
        dm = AlignmentDataModule(toy, data_dir=str(root), cache_dir=str(tmp_path / f"cache-{name}"),
                                 output_dir=str(tmp_path / f"run-{name}"), seeds=seeds)
        dm.setup("fit")
        assert not any(row["cached"] for row in dm.seed_quality)  # really computed, twice
        links.append([(tmp_path / f"run-{name}" / "seeds" / f"stage{i}_links.tsv").read_bytes() for i in (1, 2, 3)])
        tests.append(dm.split.test)
    assert links[0] == links[1]
    assert len(tests[0]) != len(tests[1])  # the gold links did differ


def test_unknown_test_links_choice_is_an_error(tmp_path, cache_dir):
    with pytest.raises(Exception, match="choose among \\['split', 'all'\\]"):
        run(make_config(tmp_path, cache_dir, ["seeds=pivot", "seeds.test_links=valid"]))


@pytest.mark.parametrize(("dataset", "budget"), [("dwy15k", 5000), ("dbp15k_zh_en", 1000), ("toy", 1000)])
@pytest.mark.parametrize("generator", ["psqe", "pivot"])
def test_seed_budget_follows_the_dataset(tmp_path, cache_dir, dataset, budget, generator):
    """The PSQE paper's n: 5000 on DWY15K, 1000 elsewhere; the dataset config carries it."""
    cfg = make_config(tmp_path, cache_dir, [f"dataset={dataset}", f"seeds={generator}"])
    assert cfg.seeds.n == budget
    assert make_config(tmp_path, cache_dir, [f"dataset={dataset}", f"seeds={generator}", "seeds.n=7"]).seeds.n == 7
