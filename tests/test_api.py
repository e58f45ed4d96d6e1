"""The Python API: ``mmea_lightning.run`` is the command line without the command line; ``mmea_lightning.predict``
returns a DataFrame; ``import mmea_lightning`` stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

import mmea_lightning

OVERRIDES = ["threads=1", "model.max_epochs=4", "model.check_val_every_n_epoch=2", "logger=none",
             "trainer.enable_progress_bar=false"]


def _env(cache_dir: Path) -> dict:
    return {**os.environ, "MMEA_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline"}


def test_run_returns_what_the_command_line_computes(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("MMEA_CACHE_DIR", str(cache_dir))
    monkeypatch.chdir(tmp_path)
    assert not HydraConfig.initialized()
    summary = mmea_lightning.run([*OVERRIDES, f"hydra.run.dir={tmp_path / 'api'}"])
    assert not HydraConfig.initialized()  # left as it was
    assert summary["run"]["output_dir"] == str(tmp_path / "api")
    assert json.loads((tmp_path / "api" / "metrics.json").read_text())["test/mrr"] == summary["test/mrr"]

    done = subprocess.run([sys.executable, "-m", "mmea_lightning.train", *OVERRIDES,
                           f"hydra.run.dir={tmp_path / 'cli'}"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env=_env(cache_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    metrics = sorted(k for k in cli if k.startswith("test") or k == "val/best_mrr")
    assert len(metrics) > 30
    assert {k: summary[k] for k in metrics} == {k: cli[k] for k in metrics}
    api_config = (tmp_path / "api" / "config.yaml").read_text().replace(str(tmp_path / "api"), "<run>")
    cli_config = (tmp_path / "cli" / "config.yaml").read_text().replace(str(tmp_path / "cli"), "<run>")
    assert api_config == cli_config  # the same composed config, run directory aside


def test_compose_config_resolves_what_needs_a_running_hydra(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = mmea_lightning.compose_config(["model=mclea", "seed=3"])
    assert cfg.model.name == "mclea" and cfg.seed == 3
    output_dir = Path(cfg.paths.output_dir)  # ${hydra:runtime.output_dir}: "HydraConfig was not set" by hand
    assert output_dir.is_absolute() and output_dir.parent.parent == tmp_path / "outputs" / "train"
    assert output_dir.name.endswith("_toy_mclea") and cfg.paths.root_dir == str(tmp_path)
    assert "hydra" not in cfg and not HydraConfig.initialized()
    with pytest.raises(TypeError, match="list of strings"):
        mmea_lightning.compose_config("seed=3")


def test_predict_returns_a_dataframe_with_the_test_metrics(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("MMEA_CACHE_DIR", str(cache_dir))
    summary = mmea_lightning.run([*OVERRIDES, f"hydra.run.dir={tmp_path / 'run'}"])
    table = mmea_lightning.predict(summary["run"]["best_checkpoint"], top_k=3, decoding="hungarian",
                                   output_dir=tmp_path / "predict")
    assert list(table.columns) == ["kg1_uri", "kg2_uri", "score", "rank", "kg1_id", "kg2_id", "gold", "aligned"]
    assert table.attrs["metrics"]["test/mrr"] == pytest.approx(summary["test/mrr"], rel=1e-6)
    assert 0 <= table.attrs["metrics"]["test_1to1/hits@1"] <= 1
    assert table.attrs["predict"]["files"]["predictions"] == str(tmp_path / "predict" / "predictions.tsv")
    assert (tmp_path / "predict" / "alignment.tsv").is_file()
    restored = mmea_lightning.load_checkpoint(summary["run"]["best_checkpoint"])
    assert restored.module.embeddings().shape[0] == restored.datamodule.pair.num_entities

    import mmea_lightning.predict as module  # the entry point shares the name: still callable the same way

    assert mmea_lightning.predict is module
    again = mmea_lightning.predict(summary["run"]["best_checkpoint"], top_k=3, evaluate=False)
    columns = ["kg1_id", "kg2_id", "rank"]  # the top 3 of each query, without the partners beyond them
    assert again[columns].equals(table.loc[table["rank"] <= 3, columns].reset_index(drop=True))


def test_import_is_light():
    code = ("import sys, mmea_lightning; "
            "print(sorted(m for m in ('torch', 'lightning', 'hydra', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
