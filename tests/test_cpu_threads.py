"""The ``threads`` setting: ``auto`` takes the free cores split between parallel jobs, never more, at least one."""

from __future__ import annotations

import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from mmea_lightning import cpu_threads
from mmea_lightning.cpu_threads import auto_threads, check_threads, idle_cores, parallel_jobs, set_threads

from .conftest import CONF_DIR


@pytest.mark.parametrize(("cores", "jobs", "idle", "expected"), [
    (2, 1, 2.0, 2),    # an idle 2-core machine, one run: both cores
    (2, 1, 0.1, 1),    # both cores busy with other jobs: one thread, never torch's two
    (2, 1, 1.2, 1),    # one core free
    (8, 2, 8.0, 4),    # two parallel jobs share the cores
    (8, 4, 3.0, 2),    # ... and the idle cores cap the share
    (2, 4, 2.0, 1),    # more jobs than cores: at least one thread
])
def test_auto_threads(cores, jobs, idle, expected, monkeypatch):
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: cores)
    monkeypatch.setattr(cpu_threads, "parallel_jobs", lambda n: jobs)
    monkeypatch.setattr(cpu_threads, "idle_cores", lambda n: idle)
    assert auto_threads() == expected


def test_idle_cores_is_a_share_of_the_machine():
    idle = idle_cores(os.cpu_count() or 1, sample_seconds=0.1)
    assert 0.0 <= idle <= (os.cpu_count() or 1)


def test_parallel_jobs_reads_the_joblib_launcher():
    assert parallel_jobs(8) == 1  # outside a Hydra application
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for launcher, n_jobs, expected in (("local_parallel", None, 2), ("local_parallel", -1, 8),
                                           ("local_parallel", -3, 6), ("basic", None, 1)):
            overrides = [f"hydra/launcher={launcher}"] + ([f"hydra.launcher.n_jobs={n_jobs}"] if n_jobs else [])
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            try:
                assert parallel_jobs(8) == expected, (launcher, n_jobs)
            finally:
                HydraConfig.instance().cfg = None


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(cpu_threads, "auto_threads", lambda: 2)
        assert set_threads("auto") == 2 and torch.get_num_threads() == 2
        assert set_threads(None) == 2  # torch's setting stays
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", [0, -1, "two", 1.5, True])
def test_bad_threads_are_refused(value):
    with pytest.raises(ValueError, match="pass auto"):
        check_threads(value)


def test_auto_is_pinned_per_run_and_kept_by_a_resume(tmp_path, cache_dir, monkeypatch):
    """``threads=auto`` is resolved once: config.yaml and metrics.json record the count, and a resumed run uses the
    count of the run it continues (float sums depend on it), whatever ``auto`` would say now."""
    import yaml

    from mmea_lightning.train import run

    from .conftest import make_config

    before = torch.get_num_threads()
    overrides = ["model.max_epochs=1", "logger=none", "threads=auto"]
    try:
        monkeypatch.setattr(cpu_threads, "auto_threads", lambda: 1)
        cfg = make_config(tmp_path, cache_dir, overrides)
        first = run(cfg)
        assert cfg.threads == "auto"  # the caller's config is left alone
        assert first["run"]["threads"] == 1
        assert yaml.safe_load((tmp_path / "config.yaml").read_text())["threads"] == 1
        (tmp_path / "metrics.json").unlink()  # as if killed after its last checkpoint
        monkeypatch.setattr(cpu_threads, "auto_threads", lambda: 2)
        resumed = run(make_config(tmp_path, cache_dir, overrides))
        assert resumed["run"]["resumed_from"] == str(tmp_path / "checkpoints" / "last.ckpt")
        assert resumed["run"]["threads"] == 1 and torch.get_num_threads() == 1
        assert {k: v for k, v in resumed.items() if k != "run"} == {k: v for k, v in first.items() if k != "run"}
        fresh = run(make_config(tmp_path / "fresh", cache_dir, overrides))
        assert fresh["run"]["threads"] == 2
    finally:
        torch.set_num_threads(before)
