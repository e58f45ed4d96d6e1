"""Logger set-up: built from the config without class-name matching, continued by a resumed run, given the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import OmegaConf

from mmea_lightning.loggers import LoggerContext, instantiate_loggers, run_hyperparameters

from .conftest import make_config


class MyCSVLogger(CSVLogger):
    """A user's own CSV logger: treated as a CSV logger because it is one (no name matching)."""


def _loggers_cfg(tmp_path, cache_dir, logger="wandb"):
    return make_config(tmp_path, cache_dir, [f"logger={logger}"]).logger


def _fake_interrupted_wandb_run(save_dir, run_id="abc123xy"):
    """What an interrupted W&B run leaves: ``wandb/offline-run-<date>-<id>/`` and the ``latest-run`` link to it."""
    wandb_dir = save_dir / "wandb"
    run_dir = wandb_dir / f"offline-run-20261203_120000-{run_id}"
    run_dir.mkdir(parents=True)
    (wandb_dir / "latest-run").symlink_to(run_dir.name)
    return run_id


def test_a_fresh_run_gets_fresh_loggers_with_its_tags(tmp_path, cache_dir):
    loggers = instantiate_loggers(_loggers_cfg(tmp_path, cache_dir), LoggerContext(tags=("seeds:gold",)))
    csv, wandb = sorted(loggers, key=lambda logger: type(logger).__name__)
    assert isinstance(csv, CSVLogger) and csv.version == "" and Path(csv.log_dir) == tmp_path / "csv"
    assert isinstance(wandb, WandbLogger)
    assert wandb._wandb_init["tags"] == ["dataset:toy", "model:eva", "ratio:0.3", "surface:False",
                                         "iterative:False", "seeds:gold"]
    assert wandb.version is None  # W&B makes a new run id


def test_a_resumed_run_continues_its_wandb_run_and_starts_a_new_csv_version(tmp_path, cache_dir):
    run_id = _fake_interrupted_wandb_run(tmp_path)
    context = LoggerContext(resuming=True)
    loggers = instantiate_loggers(_loggers_cfg(tmp_path, cache_dir), context)
    wandb = next(logger for logger in loggers if isinstance(logger, WandbLogger))
    csv = next(logger for logger in loggers if isinstance(logger, CSVLogger))
    assert wandb.version == run_id and wandb._wandb_init["resume"] == "allow"  # the same W&B run goes on
    assert csv.version == "resume-1"
    (tmp_path / "csv" / "resume-1").mkdir(parents=True)  # a second resume keeps the first resume's log too
    again = instantiate_loggers(_loggers_cfg(tmp_path, cache_dir, "csv"), context)
    assert [logger.version for logger in again] == ["resume-2"]


def test_a_resumed_run_without_an_earlier_wandb_run_starts_one(tmp_path, cache_dir):
    loggers = instantiate_loggers(_loggers_cfg(tmp_path, cache_dir), LoggerContext(resuming=True))
    wandb = next(logger for logger in loggers if isinstance(logger, WandbLogger))
    assert wandb.version is None


def test_a_subclass_is_handled_as_its_base_class(tmp_path, cache_dir):
    cfg = OmegaConf.create({"mine": {"_target_": f"{__name__}.MyCSVLogger", "save_dir": str(tmp_path),
                                     "name": "csv", "version": ""}})
    (logger,) = instantiate_loggers(cfg, LoggerContext(resuming=True))
    assert isinstance(logger, MyCSVLogger) and logger.version == "resume-1"


def test_a_logger_without_target_is_a_clear_error():
    with pytest.raises(ValueError, match=r"logger.mine has no _target_.*logger.mine=null"):
        instantiate_loggers(OmegaConf.create({"mine": {"save_dir": "x"}}))


def test_none_and_null_entries_give_no_logger(tmp_path, cache_dir):
    assert instantiate_loggers(_loggers_cfg(tmp_path, cache_dir, "none")) == []
    assert instantiate_loggers(OmegaConf.create({"csv": None})) == []


def test_the_hyperparameters_are_the_resolved_config(tmp_path, cache_dir):
    cfg = make_config(tmp_path, cache_dir, ["seed_ratio=0.4"])
    params = run_hyperparameters(cfg)
    assert params["seed_ratio"] == 0.4 and params["model"]["name"] == "eva" and params["dataset"]["name"] == "toy"
    assert params["data"]["seed_ratio"] == 0.4 and "hydra" not in params  # interpolations resolved
    assert yaml.safe_load(yaml.safe_dump(params)) == params  # plain values: a YAML file, a W&B config, a checkpoint
