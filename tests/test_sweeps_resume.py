"""Multiruns through the real command line (joblib launcher), the report on them, skipping finished jobs, resuming
a killed run, and refusing to mix configurations in one run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmea_lightning.report import build_report
from mmea_lightning.train import choose_test_checkpoint, run

from .conftest import make_config

ROOT = Path(__file__).resolve().parents[1]


def _env(cache_dir: Path) -> dict:
    return {**os.environ, "MMEA_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}


def _train(args: list[str], cache_dir: Path, **kwargs):
    return subprocess.run([sys.executable, "-m", "mmea_lightning.train", *args], cwd=ROOT, env=_env(cache_dir),
                          capture_output=True, text=True, **kwargs)


def test_two_job_multirun_report_and_rerun_skips(tmp_path, cache_dir):
    sweep_dir = tmp_path / "multirun"
    args = ["-m", "hydra/launcher=local_parallel", "threads=1", "sweep=seed_ratio", "seed_ratio=0.2,0.5",
            "model.max_epochs=4", "model.check_val_every_n_epoch=2", "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={sweep_dir}"]
    first = _train(args, cache_dir, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]
    assert jobs[0].name.endswith("seed_ratio=0.2") and jobs[1].name.endswith("seed_ratio=0.5")
    for job in jobs:
        assert (job / "config.yaml").is_file() and (job / "metrics.json").is_file()
    ratios = [json.loads((job / "metrics.json").read_text())["run"]["split"]["seed_ratio"] for job in jobs]
    assert ratios == [0.2, 0.5]

    written = build_report([sweep_dir])
    table = (sweep_dir / "report" / "main_table.md").read_text()
    assert written["num_runs"] == 2 and "| toy | 0.2 |" in table and "| toy | 0.5 |" in table
    assert (sweep_dir / "report" / "metrics_vs_seed_ratio.png").is_file()

    stamps = [(job / "metrics.json").stat().st_mtime_ns for job in jobs]
    again = _train(args, cache_dir, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped:") == 2
    assert [(job / "metrics.json").stat().st_mtime_ns for job in jobs] == stamps


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    common = ["threads=1", "model.max_epochs=100", "model.check_val_every_n_epoch=5",
              "trainer.enable_progress_bar=false", "callbacks.early_stopping=null"]
    args = [*common, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "mmea_lightning.train", *args], cwd=ROOT, env=_env(cache_dir),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 900
        while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # a few more epochs
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert last.is_file(), "the run never wrote checkpoints/last.ckpt"
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be killed"

    resumed = _train(args, cache_dir, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["run"]["resumed_from"] == str(last)
    resumed_log = (run_dir / "csv" / "resume-1" / "metrics.csv").read_text().splitlines()
    header = resumed_log[0].split(",")
    epochs = [row.split(",")[header.index("epoch")] for row in resumed_log[1:]]
    first_epoch = int(float(epochs[0]))  # every row carries its epoch, the learning-rate monitor's too
    # continued where the killed run stopped, not from epoch 0: after the last validation epoch it completed
    # (last.ckpt is written at the end of a training epoch that validates, epochs 4, 9, ...)
    assert first_epoch >= 5 and first_epoch % 5 == 0
    # the timer's state travels in the checkpoint: it counts the killed run's epochs too, every one once
    assert summary["run"]["perf"]["epochs_run"] == 100
    assert summary["test/hits@1"] > 0.3
    # a resume is exact (issue 27, defect 5): the same numbers as a run that was never killed
    uninterrupted = _train([*common, f"hydra.run.dir={tmp_path / 'uninterrupted'}"], cache_dir, timeout=1200)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    reference = json.loads((tmp_path / "uninterrupted" / "metrics.json").read_text())
    keys = sorted(k for k in reference if k.startswith("test") or k == "val/best_mrr")
    assert {k: summary[k] for k in keys} == {k: reference[k] for k in keys}
    assert reference["run"]["perf"]["epochs_run"] == 100


def test_last_checkpoint_follows_every_validation_check_not_only_new_bests(tmp_path, cache_dir):
    """lr 0: the validation MRR never improves after the first check, yet ``last.ckpt`` must hold the latest epoch
    (Lightning's own ``save_last`` refreshes it only with a new best: a resume would lose every epoch since)."""
    import torch

    summary = run(make_config(tmp_path, cache_dir, ["model.max_epochs=6", "model.check_val_every_n_epoch=2",
                                                    "model.module.optimizer.lr=0.0"]))
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-epoch001.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 5
    assert summary["run"]["test_checkpoint"] == {"policy": "best", "weights": str(checkpoints / "best-epoch001.ckpt")}


@pytest.mark.parametrize(("choice", "supervised", "policy"), [("auto", True, "best"), ("auto", False, "last"),
                                                              ("best", False, "best"), ("last", True, "last")])
def test_test_checkpoint_policy(choice, supervised, policy):
    assert choose_test_checkpoint(choice, supervised) == policy


def test_unknown_test_checkpoint_is_an_error():
    with pytest.raises(ValueError, match="choose one of auto, best, last"):
        choose_test_checkpoint("final", True)


def test_a_run_directory_never_mixes_configurations(tmp_path, cache_dir):
    base = ["model.max_epochs=2", "model.check_val_every_n_epoch=1"]
    first = run(make_config(tmp_path, cache_dir, base))
    assert run(make_config(tmp_path, cache_dir, base)) == first  # finished: skipped, same summary
    with pytest.raises(ValueError, match="different configuration"):
        run(make_config(tmp_path, cache_dir, [*base, "seed=7"]))
    rerun = run(make_config(tmp_path, cache_dir, [*base, "resume=false"]))
    assert rerun["test/mrr"] == first["test/mrr"] and rerun["run"]["resumed_from"] is None


SWEEPS = {"seed_ratio": "seed_ratio", "low_resource": "seed_ratio", "repeats": "split_seed",
          "dataset_model": "model", "mpsea_theta": "model.module.aligner.theta",
          "mpsea_alpha": "model.module.aligner.alpha", "psqe_clusters": "seeds.cluster_sampling.clusters",
          "mpsea_ablation": "model.ablation", "optuna": "model.module.optimizer.lr"}  # optuna last: checked below


def test_ablation_sweep_lists_every_mpsea_variant_and_the_full_model():
    import yaml

    from mmea_lightning.models.aligners.mpsea import ABLATIONS

    sweep = yaml.safe_load((ROOT / "conf" / "sweep" / "mpsea_ablation.yaml").read_text())
    values = sweep["hydra"]["sweeper"]["params"]["model.ablation"].split(",")
    assert values == ["none", *ABLATIONS]


def test_every_sweep_and_launcher_composes():
    from hydra import compose, initialize_config_dir

    from .conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for sweep, key in SWEEPS.items():
            cfg = compose(config_name="train", overrides=[f"sweep={sweep}"], return_hydra_config=True)
            assert key in cfg.hydra.sweeper.params, sweep
        assert "optuna" in cfg.hydra.sweeper._target_.lower() and cfg.hydra.sweeper.direction == "maximize"
        for launcher, target in (("local_parallel", "joblib"), ("slurm", "submitit")):
            composed = compose(config_name="train", overrides=[f"hydra/launcher={launcher}"],
                               return_hydra_config=True)
            assert target in composed.hydra.launcher._target_.lower()
