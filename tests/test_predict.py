"""Checkpoints and inference: a checkpoint alone rebuilds its module and data; ``mmea_lightning.predict``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmea_lightning.lightning.aligner_module import AlignerModule
from mmea_lightning.lightning.restore import restore_run
from mmea_lightning.train import run

from .conftest import make_config

TRAIN = ["threads=1", "model.max_epochs=10", "model.check_val_every_n_epoch=5"]

#: run in a fresh interpreter: the module from the checkpoint alone, evaluated on the run's own test links
FRESH_PROCESS = """
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
from mmea_lightning.eval import evaluate_alignment
from mmea_lightning.lightning.aligner_module import AlignerModule
module = AlignerModule.load_from_checkpoint(sys.argv[1])
links = torch.from_numpy(np.loadtxt(sys.argv[2], dtype=np.int64, delimiter="\\t").reshape(-1, 2))
metrics = evaluate_alignment(module.embeddings(), links, module.kg1_ids, module.kg2_ids, prefix="test",
                             protocols=module.test_protocols, csls_k=module.csls_k)
print(json.dumps({"metrics": metrics, "training": module.training, "model": module.hparams["model"]["name"]}))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("run")
    return out, run(make_config(out, cache_dir, TRAIN))


def test_checkpoint_loads_in_a_fresh_process_and_reproduces_the_test_metrics(trained):
    out, summary = trained
    best = summary["run"]["best_checkpoint"]
    assert summary["run"]["test_checkpoint"]["weights"] == best  # the run tested the best checkpoint
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, best, str(out / "split" / "test_links.tsv")],
                          capture_output=True, text=True, timeout=300, cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["training"] is False and loaded["model"] == "eva"
    saved = json.loads((out / "metrics.json").read_text())
    tested = {k: v for k, v in saved.items() if k.startswith("test") and isinstance(v, float)}
    assert len(tested) >= 30 and set(tested) == set(loaded["metrics"])
    assert loaded["metrics"] == pytest.approx(tested, rel=1e-6, abs=1e-9)


def test_checkpoint_carries_the_resolved_config_as_plain_values(trained):
    out, summary = trained
    checkpoint = torch.load(summary["run"]["best_checkpoint"], map_location="cpu", weights_only=True)
    config = checkpoint["hyper_parameters"]
    assert checkpoint["hparams_name"] == "config"
    assert config["dataset"]["name"] == "toy" and config["model"]["module"]["aligner"]["_partial_"] is True
    assert config["paths"]["output_dir"] == str(out) and config["seed"] == 42
    assert "${" not in json.dumps(config)  # resolved: no interpolation left
    hparams = (out / "csv" / "hparams.yaml").read_text()  # the loggers receive it too
    assert "seed_ratio: 0.3" in hparams and "name: eva" in hparams


def test_restore_rebuilds_the_split_and_writes_nothing_into_the_run(trained):
    out, summary = trained
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    restored = restore_run(summary["run"]["best_checkpoint"])
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    test_links = torch.from_numpy(__import__("numpy").loadtxt(out / "split" / "test_links.tsv", dtype="int64"))
    assert torch.equal(torch.as_tensor(restored.datamodule.split.test), test_links)
    assert restored.config["dataset"]["name"] == "toy" and not restored.module.training


def test_data_dir_override_reads_the_pair_from_elsewhere(trained, tmp_path, cache_dir):
    import shutil

    out, summary = trained
    shutil.copytree(cache_dir / "toy", tmp_path / "toy_copy")
    restored = restore_run(summary["run"]["best_checkpoint"], data_dir=tmp_path / "toy_copy")
    assert restored.datamodule.pair.files["ill_ent_ids"].startswith(str(tmp_path / "toy_copy"))
    assert restored.config["data"]["data_dir"] == str(tmp_path / "toy_copy")


def _rewritten(summary: dict, tmp_path: Path, change) -> Path:
    checkpoint = torch.load(summary["run"]["best_checkpoint"], map_location="cpu", weights_only=True)
    change(checkpoint)
    path = tmp_path / "changed.ckpt"
    torch.save(checkpoint, path)
    return path


def test_missing_data_root_names_the_dataset_and_the_fix(trained, tmp_path):
    _, summary = trained

    def real_dataset(checkpoint):
        config = checkpoint["hyper_parameters"]
        config["data"]["dataset"] = {"name": "fbdb15k", "folder": "FBDB15K/norm"}
        config["data"]["data_dir"] = str(tmp_path / "gone")

    path = _rewritten(summary, tmp_path, real_dataset)
    with pytest.raises(FileNotFoundError, match=r"trained on dataset fbdb15k from .*gone.*pass data_dir="):
        AlignerModule.load_from_checkpoint(path)


def test_changed_data_is_refused(trained, tmp_path):
    _, summary = trained

    def other_split(checkpoint):
        checkpoint["hyper_parameters"]["data"]["split_seed"] = 7

    with pytest.raises(ValueError, match="seed links rebuilt .* differ"):
        restore_run(_rewritten(summary, tmp_path, other_split))


def test_files_that_are_not_checkpoints_of_this_project(trained, tmp_path):
    _, summary = trained
    with pytest.raises(FileNotFoundError, match="not found"):
        restore_run(tmp_path / "missing.ckpt")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        restore_run(tmp_path / "notes.txt")
    torch.save({"state_dict": {}, "payload": Path("x")}, tmp_path / "pickled.ckpt")  # an arbitrary object
    with pytest.raises(ValueError, match="never unpickled"):
        restore_run(tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match="carries no run config"):
        restore_run(_rewritten(summary, tmp_path, lambda checkpoint: checkpoint.pop("hyper_parameters")))
