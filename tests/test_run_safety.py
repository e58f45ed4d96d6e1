"""Issue 27 at the run level: the user's data root is never written, finished results are never reused for a
different experiment, and bad settings end in one clear error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from mmea_lightning.data.toy import generate_toy_pair
from mmea_lightning.run_identity import RunIdentityMismatch
from mmea_lightning.train import run

from .conftest import make_config

ROOT = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_default_run_with_mmea_data_dir_leaves_the_data_root_alone(tmp_path, cache_dir, monkeypatch):
    """Defect 1: with the README's ``export MMEA_DATA_DIR=...`` the toy run used to move that root aside and delete
    it. Now the toy pair lives in the cache and the data root is only ever read."""
    user_root = tmp_path / "mmkg"
    for folder in ("DBP15K/zh_en", "FBDB15K/norm"):
        (user_root / folder).mkdir(parents=True)
        (user_root / folder / "ent_ids_1").write_text("0\thttp://example.org/a\n")
    before = _tree(user_root)
    monkeypatch.setenv("MMEA_DATA_DIR", str(user_root))
    cfg = make_config(tmp_path / "run", cache_dir, ["model.max_epochs=1", "logger=none"])
    assert cfg.data_dir == str(user_root)
    summary = run(cfg)
    assert summary["run"]["dataset"] == "toy"
    assert _tree(user_root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mmkg", "run"]
    assert (cache_dir / "toy" / "TOY" / "pair" / "ill_ent_ids").is_file()


def _cli(args: list[str], tmp_path: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MMEA_DATA_DIR")}
    env.update(MMEA_CACHE_DIR=str(cache_dir), WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", "mmea_lightning.train", "logger=none", "model.max_epochs=1",
                           "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "message"), [
    (["seed_ratio=abc"], "seed_ratio='abc' is not a number"),
    (["val_ratio=0"], "val_ratio=0.0 leaves no validation links"),
    (["val_ratio=0.99"], "val_ratio=0.99 keeps more links for validation than for training"),
    (["test_checkpoint=newest"], "test_checkpoint='newest'"),
    (["threads=0"], "threads=0: pass auto"),
])
def test_bad_settings_end_in_one_clear_last_line(args, message, tmp_path, cache_dir):
    """Defects 7-8: ``seed_ratio=abc`` was a TypeError traceback, ``val_ratio=0`` validated on the training links and
    ``val_ratio=0.99`` trained on one link; now each is refused before anything runs, the error printed last."""
    result = _cli(args, tmp_path, cache_dir)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and message in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_an_unknown_optimized_metric_ends_in_one_clear_last_line(tmp_path, cache_dir):
    """The sweeper's metric is looked up in the run's summary: a name it does not hold is an error that lists the
    names it does hold (the run's results are kept)."""
    result = _cli(["optimized_metric=val/best_mmr"], tmp_path, cache_dir)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: optimized_metric='val/best_mmr' is not in metrics.json: choose one of ")
    assert "val/best_mrr" in last and "test/mrr" in last and "Traceback" not in result.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_a_data_error_names_file_and_line_last(tmp_path, cache_dir):
    root = tmp_path / "toyroot"
    shutil.copytree(cache_dir / "toy", root) if (cache_dir / "toy").exists() else generate_toy_pair(root)
    links = root / "TOY" / "pair" / "ill_ent_ids"
    lines = links.read_text().splitlines()
    lines[4] = "12\tnot-an-id"
    links.write_text("\n".join(lines) + "\n")
    result = _cli([f"data_dir={root}"], tmp_path, cache_dir)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: {links}, line 5:") and "Fix:" in last and "Traceback" not in result.stderr


def test_a_finished_run_is_reused_only_for_the_same_settings_and_data(tmp_path, cache_dir):
    """Defect 3: re-running a finished directory with other data (another ``data_dir``) or another
    ``test_checkpoint`` printed ``skipped`` and kept the old numbers. The same data under another path is the same
    run; other content or another result-relevant setting is refused with what differs."""
    toy_root = cache_dir / "toy"
    if not (toy_root / "TOY" / "pair" / "ill_ent_ids").is_file():
        generate_toy_pair(toy_root)
    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(toy_root, same)
    shutil.copytree(toy_root, other)
    links = other / "TOY" / "pair" / "ill_ent_ids"
    links.write_text("".join(links.read_text().splitlines(keepends=True)[:-20]))  # 20 gold links fewer
    base = ["model.max_epochs=2", "model.check_val_every_n_epoch=1", "logger=none"]
    out = tmp_path / "run"
    first = run(make_config(out, cache_dir, [*base, f"data_dir={same}"]))
    assert first["run"]["data_fingerprint"]["ill_ent_ids"] != "absent"
    assert run(make_config(out, cache_dir, base)) == first  # the cached toy pair: same content, other path
    with pytest.raises(RunIdentityMismatch, match="data file ill_ent_ids: content differs"):
        run(make_config(out, cache_dir, [*base, f"data_dir={other}"]))
    with pytest.raises(RunIdentityMismatch, match='setting test_checkpoint: "auto" stored, "last" now'):
        run(make_config(out, cache_dir, [*base, "test_checkpoint=last"]))
    with pytest.raises(RunIdentityMismatch, match="setting callbacks.early_stopping.patience"):
        run(make_config(out, cache_dir, [*base, "callbacks.early_stopping.patience=3"]))
    assert json.loads((out / "metrics.json").read_text()) == first  # nothing overwritten
    assert run(make_config(out, cache_dir, [*base, "threads=1"])) == first  # threads: not a result setting
    rerun = run(make_config(out, cache_dir, [*base, f"data_dir={other}", "resume=false"]))
    assert rerun["run"]["split"]["test"] < first["run"]["split"]["test"]


def test_a_directory_without_identity_is_not_reused(tmp_path, cache_dir):
    base = ["model.max_epochs=1", "logger=none"]
    out = tmp_path / "run"
    run(make_config(out, cache_dir, base))
    (out / "run_identity.json").unlink()  # as written by an older version
    with pytest.raises(RunIdentityMismatch, match="cannot be checked"):
        run(make_config(out, cache_dir, base))


def test_unknown_test_protocol_is_refused_before_training(tmp_path, cache_dir):
    cfg = make_config(tmp_path / "run", cache_dir, ["model.max_epochs=1", "logger=none",
                                                     "+model.module.test_protocols=[standard,csls_l2r]"])
    with pytest.raises(ValueError, match=r"unknown test_protocols \['csls_l2r'\]"):
        run(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


def test_early_stopping_is_reported(tmp_path, cache_dir, caplog):
    overrides = ["model.max_epochs=30", "model.check_val_every_n_epoch=1", "logger=none",
                 "callbacks.early_stopping.patience=2", "+callbacks.early_stopping.min_delta=1.0"]
    summary = run(make_config(tmp_path / "run", cache_dir, overrides))
    stop = summary["run"]["early_stopping"]
    assert stop["max_epochs"] == 30 and stop["epoch"] < 29 and summary["run"]["perf"]["epochs_run"] == stop["epoch"] + 1
    assert "early stopping ended training" in caplog.text
    full = run(make_config(tmp_path / "full", cache_dir, ["model.max_epochs=2", "logger=none"]))
    assert full["run"]["early_stopping"] is None


def _retest(cfg, checkpoint: Path) -> dict[str, float]:
    """The test metrics of ``checkpoint``, evaluated afresh: a new module and DataModule built from ``cfg``."""
    datamodule = instantiate(cfg.data, _convert_="object")
    datamodule.setup("fit")
    module = instantiate(cfg.model.module, _partial_=True)(features=datamodule.features)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    results = trainer.test(module, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False)
    return {k: float(v) for k, v in results[0].items()}


@pytest.mark.parametrize(("choice", "policy"), [("auto", "last (no best checkpoint: no validation check ran)"),
                                                ("last", "last")])
def test_a_run_shorter_than_a_validation_interval_leaves_and_tests_its_checkpoint(choice, policy, tmp_path,
                                                                                  cache_dir, caplog):
    """Two epochs with a validation check every five: no check ran, so there is no best checkpoint. The run still
    leaves ``checkpoints/last.ckpt`` holding both epochs, names it as the weights it tested, and those weights,
    tested afresh, give the metrics it reports."""
    cfg = make_config(tmp_path / "run", cache_dir, ["model.max_epochs=2", "model.check_val_every_n_epoch=5",
                                                    "logger=none", f"test_checkpoint={choice}"])
    summary = run(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["callbacks"]["RunTimer"]["epochs_run"] == 2 and saved["global_step"] > 0
    tested = summary["run"]["test_checkpoint"]
    assert tested["policy"] == policy and Path(tested["weights"]).resolve() == last.resolve()
    assert ("no validation check ran" in caplog.text) == (choice == "auto")
    reported = {k: v for k, v in summary.items() if k.startswith("test")}
    assert reported and _retest(cfg, last) == reported


def test_the_best_checkpoint_named_is_the_one_tested(tmp_path, cache_dir):
    """``best``: the summary names the best checkpoint, and testing that file afresh gives the reported metrics,
    while the final weights (``last.ckpt``, written when training ends on an epoch that did not validate) differ."""
    cfg = make_config(tmp_path / "run", cache_dir, ["model.max_epochs=5", "model.check_val_every_n_epoch=2",
                                                    "logger=none", "callbacks.early_stopping=null"])
    summary = run(cfg)
    checkpoints = tmp_path / "run" / "checkpoints"
    best = Path(summary["run"]["test_checkpoint"]["weights"])
    assert summary["run"]["test_checkpoint"]["policy"] == "best" and best.parent.resolve() == checkpoints.resolve()
    assert best.name in {"best-epoch001.ckpt", "best-epoch003.ckpt"}
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["callbacks"]["RunTimer"]["epochs_run"] == 5  # saved at the end of fit: epoch 4 did not validate
    reported = {k: v for k, v in summary.items() if k.startswith("test")}
    assert _retest(cfg, best) == reported
    assert _retest(cfg, checkpoints / "last.ckpt") != reported


def test_result_files_are_readable_by_everyone(tmp_path, cache_dir):
    """Under the usual umask 022 every file a run writes is 0644, like any file the user writes (metrics.json was
    0600: written through a private temporary file)."""
    previous = os.umask(0o022)
    try:
        run(make_config(tmp_path / "run", cache_dir, ["model.max_epochs=2", "model.check_val_every_n_epoch=1"]))
    finally:
        os.umask(previous)
    files = {str(p.relative_to(tmp_path / "run")): p.stat().st_mode & 0o777
             for p in (tmp_path / "run").rglob("*") if p.is_file()}
    for name in ("metrics.json", "config.yaml", "run_identity.json", "csv/hparams.yaml", "csv/metrics.csv",
                 "checkpoints/last.ckpt"):
        assert name in files, sorted(files)
    assert {name: oct(mode) for name, mode in files.items() if mode != 0o644} == {}
