"""Issue 28 part 6: code defined *outside* the package trains through the CLI. The examples of docs/extending.md (an
aligner, seed generators and their configs) are written into a temporary folder, found through ``PYTHONPATH`` and
Hydra's search path, and run as the page says -- so the page's code is known to work."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mmea_lightning.data.loader import DatasetSpec
from mmea_lightning.lightning.datamodule import AlignmentDataModule

from .conftest import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
FILE_BLOCK = re.compile(r"^`(?P<path>my_lab/[^`]+)`:\n```\w*\n(?P<body>.*?)^```", re.S | re.M)


@pytest.fixture
def lab(tmp_path) -> Path:
    """The page's ``my_lab`` folder, written from its code blocks (each follows a line `` `my_lab/<path>`: ``)."""
    blocks = FILE_BLOCK.findall(DOC.read_text())
    paths = [path for path, _ in blocks]
    assert {"my_lab/my_aligner.py", "my_lab/my_seeds.py", "my_lab/conf/model/projection.yaml",
            "my_lab/conf/seeds/mnn.yaml", "my_lab/conf/dataset/my_pair.yaml",
            "my_lab/conf/dataset/my_mmkg_pair.yaml"} <= set(paths), paths
    for path, body in blocks:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    return tmp_path / "my_lab"


def _train(lab: Path, run_dir: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m mmea_lightning.train`` from the user's folder, as docs/extending.md shows, with tiny limits."""
    env = {**os.environ, "WANDB_MODE": "offline", "MMEA_CACHE_DIR": str(cache_dir),
           "PYTHONPATH": os.pathsep.join(p for p in (str(lab), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "mmea_lightning.train", f"hydra.searchpath=[file://{lab / 'conf'}]",
                           "model.max_epochs=3", "model.check_val_every_n_epoch=1", "threads=1", "logger=csv",
                           "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *overrides],
                          cwd=lab, env=env, capture_output=True, text=True, timeout=900)


def _chance_mrr(candidates: int) -> float:
    """The expected MRR of a random ranking of ``candidates`` candidates."""
    return float(np.mean(1.0 / np.arange(1, candidates + 1)))


def _check_metrics(summary: dict) -> None:
    hits = [summary[f"test/hits@{k}"] for k in (1, 5, 10)]
    assert 0.0 <= hits[0] <= hits[1] <= hits[2] <= 1.0, hits
    assert summary["test/mrr"] > _chance_mrr(int(summary["test/num_queries"])), summary["test/mrr"]


def test_an_aligner_defined_outside_the_package_trains_through_the_cli(lab, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = _train(lab, run_dir, cache_dir, "model=projection")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    run = summary["run"]
    assert run["model"] == "projection" and run["modalities_used"] == ["image"] and run["seeds"] == "gold"
    assert run["test_checkpoint"]["policy"] == "best" and Path(run["best_checkpoint"]).is_file()
    assert summary["val/best_mrr"] is not None
    _check_metrics(summary)
    assert "my_aligner.ProjectionAligner" in (run_dir / "config.yaml").read_text()
    with open(run_dir / "csv" / "metrics.csv") as handle:
        columns = next(csv.reader(handle))
    assert {"train/loss", "train/loss_l2r", "train/loss_r2l"} <= set(columns)  # the named parts are logged


def test_a_seed_generator_defined_outside_the_package_trains_through_the_cli(lab, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = _train(lab, run_dir, cache_dir, "model=projection", "seeds=mnn")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    run = summary["run"]
    assert run["seeds"] == "mnn" and run["split"]["mode"] == "unsupervised" and run["split"]["seeds"] == "mnn"
    assert run["test_checkpoint"]["policy"].startswith("last")  # pseudo seeds: validation links are not gold
    assert [row["generator"] for row in run["seed_quality"]] == ["mnn"]
    links = np.loadtxt(run_dir / "seeds" / "mnn_links.tsv", dtype=np.int64, ndmin=2)
    assert len(links) == run["split"]["pseudo_seeds"] == run["split"]["train"] + run["split"]["valid"]
    _check_metrics(summary)


def test_a_supervised_generator_defined_outside_the_package_is_served_by_the_datamodule(lab, tmp_path, cache_dir):
    spec = importlib.util.spec_from_file_location("docs_my_seeds", lab / "my_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    toy = yaml.safe_load((ROOT / "conf" / "dataset" / "toy.yaml").read_text())
    full = AlignmentDataModule(toy, cache_dir=str(cache_dir))
    few = AlignmentDataModule(toy, cache_dir=str(cache_dir), seeds=module.FewGoldSeeds(keep=20))
    full.setup()
    few.setup()
    assert few.supervised and few.summary()["seeds"] == "few_gold"
    assert few.seed_links.tolist() == full.seed_links[:20].tolist()
    assert np.array_equal(few.split.valid, full.split.valid) and np.array_equal(few.split.test, full.split.test)
    assert few.summary()["split"]["kept_training_links"] == 20


@pytest.mark.parametrize(("name", "layout"), [("my_pair", "TsvPairSpec"), ("my_mmkg_pair", "DatasetSpec")])
def test_the_dataset_configs_of_the_page_compose_through_the_search_path(name, layout, lab):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"dataset={name}", f"hydra.searchpath=[file://{lab / 'conf'}]"])
    spec = DatasetSpec.from_config(OmegaConf.to_container(cfg.dataset, resolve=True))
    assert type(spec).__name__ == layout and spec.name == name
