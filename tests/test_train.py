"""End-to-end runs of the real composed config on the embedded toy pair."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import wandb
import yaml
from hydra import compose, initialize_config_dir

from mmea_lightning.train import optimized_value, run

from .conftest import CONF_DIR, make_config

TINY = ["model.max_epochs=60", "model.check_val_every_n_epoch=5"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("run")
    return out, run(make_config(out, cache_dir, TINY))


def test_training_beats_the_untrained_model(trained, tmp_path, cache_dir):
    _, summary = trained
    untrained = run(make_config(tmp_path, cache_dir, ["model.max_epochs=0"]))
    assert untrained["run"]["perf"]["epochs_run"] == 0
    assert summary["test/mrr"] > untrained["test/mrr"] + 0.2
    assert summary["test/hits@1"] > 2 * untrained["test/hits@1"]
    assert summary["test/hits@1"] > 0.3


def test_metrics_json_and_run_directory(trained):
    out, summary = trained
    saved = json.loads((out / "metrics.json").read_text())
    for prefix in ("test", "test_r2l", "test_all", "test_all_r2l", "test_csls", "test_csls_r2l"):
        for metric in ("hits@1", "hits@5", "hits@10", "mrr", "mr"):
            assert 0 <= saved[f"{prefix}/{metric}"] <= (1e9 if metric == "mr" else 1.0)
    assert saved["test/hits@1"] <= saved["test/hits@5"] <= saved["test/hits@10"]
    assert saved["test_all/mrr"] <= saved["test/mrr"] + 1e-9  # more candidates never help
    run_info = saved["run"]
    assert run_info["modalities_used"] == ["structure", "relation", "attribute", "image"]
    assert run_info["modalities_present"]["image"] is True and run_info["surface"] is False
    assert run_info["split"]["train"] + run_info["split"]["valid"] + run_info["split"]["test"] == 400
    assert run_info["perf"]["seconds_per_epoch"] > 0 and run_info["perf"]["peak_memory_mb"] > 0
    assert saved["val/best_mrr"] > 0 and run_info["best_checkpoint"].endswith(".ckpt")
    assert (out / "config.yaml").is_file() and "seed_ratio: 0.3" in (out / "config.yaml").read_text()
    for name in ("train", "valid", "test"):
        assert (out / "split" / f"{name}_links.tsv").is_file()
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    assert "val/mrr" in rows[0] and rows[0]["lr-AdamW"] != ""  # the learning-rate monitor, at the first step
    assert all(row["epoch"] != "" for row in rows)  # its rows carry their epoch, like the module's


def test_no_logger_runs_without_the_learning_rate_monitor(tmp_path, cache_dir):
    summary = run(make_config(tmp_path, cache_dir, ["model.max_epochs=1", "logger=none"]))
    assert 0 <= summary["test/hits@1"] <= 1 and not (tmp_path / "csv").exists()


def test_same_config_same_numbers(trained, tmp_path, cache_dir):
    _, first = trained
    second = run(make_config(tmp_path, cache_dir, TINY))
    keys = [k for k in first if k.startswith("test")]
    assert keys and {k: first[k] for k in keys} == {k: second[k] for k in keys}


def test_model_seed_changes_numbers_split_seed_changes_split(trained, tmp_path, cache_dir):
    out, first = trained
    other = run(make_config(tmp_path / "a", cache_dir, [*TINY, "seed=7"]))
    assert other["test/mrr"] != first["test/mrr"]
    assert (tmp_path / "a/split/test_links.tsv").read_text() == (out / "split/test_links.tsv").read_text()
    run(make_config(tmp_path / "b", cache_dir, ["model.max_epochs=1", "split_seed=3"]))
    assert (tmp_path / "b/split/test_links.tsv").read_text() != (out / "split/test_links.tsv").read_text()


def test_missing_modality_strict_is_a_clear_error(tmp_path, cache_dir):
    cfg = make_config(tmp_path, cache_dir, ["model.max_epochs=1", "features.max_bigrams=0",
                                            "model.module.aligner.modalities=[structure,numeric]",
                                            "model.module.aligner.strict_modalities=true"])
    summary = run(cfg)  # numeric exists in the toy pair
    assert summary["run"]["modalities_used"] == ["structure", "numeric"]
    cfg = make_config(tmp_path / "x", cache_dir, ["model.max_epochs=1", "model.module.aligner.modalities=[video]",
                                                  "model.module.aligner.strict_modalities=true"])
    with pytest.raises(ValueError, match="no \\['video'\\] modality"):
        run(cfg)


def test_wandb_logger_offline(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_config(tmp_path, cache_dir, ["model.max_epochs=2", "logger=wandb"])
    run(cfg)
    # run.finish() hands the last records to the W&B service, which writes them in the background (under load, not
    # yet when finish returns: measured); tearing the service down waits for the writes
    wandb.teardown()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    # the run's protobuf log (no reader ships with wandb-core): group, tags and summary entries as plain bytes
    record = next(runs[0].glob("*.wandb")).read_bytes()
    for text in ("single", "dataset:toy", "model:eva", "seeds:gold", "ratio:0.3", "surface:False",
                 "val/best_mrr", json.dumps(saved["val/best_mrr"]), "seconds_per_epoch", "test_csls/mrr",
                 json.dumps(saved["test_csls/mrr"])):
        assert text.encode() in record, text
    # the resolved config is the W&B run's config: a dashboard groups and filters by any setting
    for key, value in (("seed_ratio", "0.3"), ("val_ratio", "0.1"), ("test_checkpoint", '"auto"')):
        assert key.encode() in record and value.encode() in record.split(key.encode(), 1)[1][:16], key
    for text in ('"name":"eva"', '"max_epochs":2', '"lr":0.0005', '"name":"toy"'):
        assert text.encode() in record, text


def test_csv_hparams_hold_the_resolved_config(trained):
    out, _ = trained
    hparams = yaml.safe_load((out / "csv" / "hparams.yaml").read_text())
    assert hparams["seed_ratio"] == 0.3 and hparams["model"]["name"] == "eva"
    assert hparams["model"]["max_epochs"] == 60 and hparams["trainer"]["max_epochs"] == 60  # interpolations resolved
    assert hparams["dataset"]["name"] == "toy" and hparams["optimized_metric"] == "val/best_mrr"


def test_the_optimized_metric_comes_from_the_config(trained):
    _, summary = trained
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        assert compose(config_name="train").optimized_metric == "val/best_mrr"
    assert optimized_value(summary, "val/best_mrr") == summary["val/best_mrr"]
    assert optimized_value(summary, "test_csls/hits@1") == summary["test_csls/hits@1"]
    assert optimized_value(summary, None) is None
    with pytest.raises(ValueError, match="choose one of test/hits@1, .*val/best_mrr"):
        optimized_value(summary, "val/mrr")


def test_debug_config_runs_one_short_epoch(tmp_path, cache_dir):
    summary = run(make_config(tmp_path, cache_dir, ["debug=default", "model.batch_size=16"]))  # ~7 batches an epoch
    assert summary["run"]["perf"]["epochs_run"] == 1 and summary["run"]["perf"]["validation_checks"] == 1
    assert summary["run"]["threads"] == 1 and not (tmp_path / "csv").exists()
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3  # trainer.limit_train_batches of debug=default
    assert summary["run"]["test_checkpoint"]["policy"] == "best" and 0 <= summary["test/hits@1"] <= 1


def test_unknown_dataset_lists_the_options():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        with pytest.raises(Exception, match="fbdb15k") as err:
            compose(config_name="train", overrides=["dataset=fbdb16k"])
    assert "Could not find 'dataset/fbdb16k'" in str(err.value)


def test_real_dataset_without_data_dir_is_a_clear_error(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv("MMEA_DATA_DIR", raising=False)
    cfg = make_config(tmp_path, cache_dir, ["dataset=fbdb15k", "data_dir=null"])
    with pytest.raises(ValueError, match="pass data_dir=<mmkg root>"):
        run(cfg)
