"""Shared fixtures: the real-data root, tiny composed configs, offline W&B."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

os.environ.setdefault("WANDB_MODE", "offline")  # online mode hangs without network
os.environ.setdefault("WANDB_SILENT", "true")

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def pytest_addoption(parser):
    parser.addoption("--data-dir", default=None,
                     help="mmkg data root for real-data tests (default: $MMEA_DATA_DIR, else ../shared/data)")


@pytest.fixture(scope="session")
def data_dir(request) -> Path:
    """The real benchmark root; tests that need it skip with the reason when it is not there."""
    root = request.config.getoption("--data-dir") or os.environ.get("MMEA_DATA_DIR")
    path = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (path / "DBP15K").is_dir():
        pytest.skip(f"real data not found at {path}: pass --data-dir or set MMEA_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def make_config(tmp_path: Path, cache_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    """Compose the real ``conf/train.yaml`` with tiny limits, writing into ``tmp_path``."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides or []))
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.cache_dir = str(cache_dir)
        cfg.trainer.enable_progress_bar = False
    return cfg
