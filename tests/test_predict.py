"""Checkpoints and inference: a checkpoint alone rebuilds its module and data; ``mmea_lightning.predict``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_restore_rebuilds_the_split_and_writes_nothing_into_the_run(trained):
    out, summary = trained
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    restored = restore_run(summary["run"]["best_checkpoint"])
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    test_links = torch.from_numpy(np.loadtxt(out / "split" / "test_links.tsv", dtype="int64"))
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
    with pytest.raises(ValueError, match="ckpt_path is empty"):
        restore_run("")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        restore_run(tmp_path / "notes.txt")
    torch.save({"state_dict": {}, "payload": Path("x")}, tmp_path / "pickled.ckpt")  # an arbitrary object
    with pytest.raises(ValueError, match="never unpickled"):
        restore_run(tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match="carries no run config"):
        restore_run(_rewritten(summary, tmp_path, lambda checkpoint: checkpoint.pop("hyper_parameters")))


def _predict_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmea_lightning.predict", "threads=1", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def _uris(cache_dir: Path) -> dict[int, str]:
    uris = {}
    for name in ("ent_ids_1", "ent_ids_2"):
        for line in (cache_dir / "toy" / "TOY" / "pair" / name).read_text().splitlines():
            ent, uri = line.split("\t")
            uris[int(ent)] = uri
    return uris


def test_predict_cli_writes_predictions_whose_top1_agree_with_the_test_hits1(trained, tmp_path, cache_dir):
    import pandas as pd

    from mmea_lightning.predict import PREDICTION_COLUMNS

    out, summary = trained
    done = _predict_cli([f"ckpt_path={summary['run']['best_checkpoint']}", "top_k=5",
                         f"hydra.run.dir={tmp_path / 'predict'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    header = (tmp_path / "predict" / "predictions.tsv").read_text().splitlines()[0]
    assert tuple(header.split("\t")) == PREDICTION_COLUMNS
    table = pd.read_csv(tmp_path / "predict" / "predictions.tsv", sep="\t")
    test = torch.from_numpy(np.loadtxt(out / "split" / "test_links.tsv", dtype="int64"))
    queries = sorted(set(test[:, 0].tolist()))
    assert len(table) == 5 * len(queries) and sorted(set(table["kg1_id"])) == queries
    assert set(table["kg2_id"]) <= set(test[:, 1].tolist())  # the test protocol's candidates
    assert (table.groupby("kg1_id")["rank"].apply(list) == [[1, 2, 3, 4, 5]] * len(queries)).all()
    assert (table.groupby("kg1_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    uris = _uris(cache_dir)
    assert (table["kg1_uri"] == table["kg1_id"].map(uris)).all()
    assert (table["kg2_uri"] == table["kg2_id"].map(uris)).all()
    top1 = dict(zip(table.loc[table["rank"] == 1, "kg1_id"], table.loc[table["rank"] == 1, "kg2_id"]))
    hits1 = sum(top1[a] == b for a, b in test.tolist()) / len(test)
    assert hits1 == pytest.approx(summary["test/hits@1"], abs=1e-6)
    assert table.loc[table["rank"] == 1, "gold"].mean() == pytest.approx(hits1)
    # the evaluation is train's test: the same metrics
    predicted = json.loads((tmp_path / "predict" / "metrics.json").read_text())
    tested = {k: v for k, v in summary.items() if k.startswith("test") and isinstance(v, float)}
    assert {k: predicted[k] for k in tested} == pytest.approx(tested, rel=1e-6, abs=1e-9)
    assert predicted["predict"]["checkpoint"] == summary["run"]["best_checkpoint"]
    assert not (tmp_path / "lightning_logs").exists() and "predict" not in {p.name for p in out.iterdir()}


def test_decoding_adds_the_one_to_one_pairs(trained, tmp_path):
    from mmea_lightning.predict import ALIGNMENT_COLUMNS, predict_checkpoint, write_prediction

    _, summary = trained
    prediction = predict_checkpoint(summary["run"]["best_checkpoint"], top_k=2, decoding="greedy")
    alignment, table = prediction.alignment, prediction.predictions
    queries = prediction.info["queries"]
    assert len(alignment) == queries == prediction.info["candidates"]  # square test links: everyone is matched
    assert alignment["kg1_id"].is_unique and alignment["kg2_id"].is_unique
    aligned = table[table["aligned"] == 1]
    assert len(aligned) == queries and aligned["kg1_id"].is_unique  # each query's partner, in or beyond the top 2
    assert (aligned.set_index("kg1_id")["kg2_id"] == alignment.set_index("kg1_id")["kg2_id"]).all()
    beyond = aligned[aligned["rank"] > 2]
    assert len(table) == 2 * queries + len(beyond) and len(beyond) > 0
    # an aligned partner's rank is its place among all candidates: rank 1 rows are the top-1 rows
    top1 = table[table["rank"] == 1].set_index("kg1_id")["kg2_id"]
    assert (aligned[aligned["rank"] == 1].set_index("kg1_id")["kg2_id"] == top1.reindex(
        aligned[aligned["rank"] == 1]["kg1_id"])).all()
    assert prediction.metrics["test_1to1_greedy/hits@1"] == pytest.approx(alignment["gold"].mean())
    files = write_prediction(prediction, tmp_path / "out")
    header = Path(files["alignment"]).read_text().splitlines()[0]
    assert tuple(header.split("\t")) == ALIGNMENT_COLUMNS


def test_entity_sets(trained):
    from mmea_lightning.predict import predict_checkpoint

    _, summary = trained
    restored = restore_run(summary["run"]["best_checkpoint"])
    split, pair = restored.datamodule.split, restored.datamodule.pair
    seeds = torch.cat([torch.as_tensor(split.train), torch.as_tensor(split.valid)])
    unaligned = predict_checkpoint(summary["run"]["best_checkpoint"], top_k=3, entities="unaligned", evaluate=False)
    assert unaligned.metrics == {}
    assert set(unaligned.predictions["kg1_id"]) == set(pair.kg1_ids.tolist()) - set(seeds[:, 0].tolist())
    assert not set(unaligned.predictions["kg2_id"]) & set(seeds[:, 1].tolist())
    everything = predict_checkpoint(summary["run"]["best_checkpoint"], top_k=1, entities="all", evaluate=False)
    assert len(everything.predictions) == len(pair.kg1_ids) and everything.info["candidates"] == len(pair.kg2_ids)


def test_predict_cli_refuses_bad_input_with_exit_status_2(trained, tmp_path):
    out, _ = trained
    # one command line (the other refusals: test_files_that_are_not_checkpoints_of_this_project)
    done = _predict_cli([f"ckpt_path={out / 'metrics.json'}", f"hydra.run.dir={tmp_path / 'p'}"], cwd=tmp_path)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "metrics.json is not a PyTorch checkpoint" in last, done.stderr[-2000:]
    assert not (tmp_path / "p" / "predictions.tsv").exists()
    from mmea_lightning.predict import check_options

    with pytest.raises(ValueError, match="top_k=0"):
        check_options(0, None, "test")
    with pytest.raises(ValueError, match="entities='train'"):
        check_options(5, "none", "train")


def test_checkpoint_of_an_own_tsv_pair_with_a_relative_path_follows_the_folder(tmp_path, cache_dir, monkeypatch):
    from mmea_lightning.data.toy import generate_toy_pair

    from .test_own_pair import derive_tsv_pair

    toy = cache_dir / "toy"
    if not (toy / "TOY").is_dir():
        generate_toy_pair(toy)
    derive_tsv_pair(toy, tmp_path / "pairs" / "my_pair")
    monkeypatch.chdir(tmp_path)  # the run records dataset.path relative to where it ran
    own = ["dataset=tsv", "dataset.name=my_pair", "dataset.path=pairs/my_pair"]
    cfg = make_config(tmp_path / "run", cache_dir, ["threads=1", "model.max_epochs=2",
                                                    "model.check_val_every_n_epoch=1", *own])
    cfg.paths.root_dir = str(tmp_path)  # where the command ran (hydra's runtime.cwd on the command line)
    summary = run(cfg)
    best = summary["run"]["best_checkpoint"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the stored relative path is taken from the training run's directory
    restored = restore_run(best)
    assert restored.datamodule.pair.name == "my_pair"
    assert restored.config["dataset"]["path"] == str(tmp_path / "pairs" / "my_pair")

    (tmp_path / "pairs" / "my_pair").rename(tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match=r"trained on dataset my_pair from pairs/my_pair; .* pass data_dir="):
        restore_run(best)
    moved = predict_checkpoint_for(best, tmp_path / "moved")
    assert moved.predictions["kg1_uri"].str.startswith("http://kg1.example/").all()
    assert moved.metrics["test/mrr"] == pytest.approx(summary["test/mrr"], rel=1e-6)


def predict_checkpoint_for(ckpt: str, data_dir: Path):
    from mmea_lightning.predict import predict_checkpoint

    return predict_checkpoint(ckpt, top_k=1, data_dir=data_dir)
