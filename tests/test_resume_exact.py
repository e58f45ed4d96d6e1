"""A run killed right after it wrote ``checkpoints/last.ckpt`` and resumed in the same run directory ends exactly
where an uninterrupted run ends: bit-identical final weights and optimiser state, the same test metrics, the same
epoch count, and for iterative training the same added seed links and round history (issue 27, defects 4 and 5).

The kill is simulated in-process: ``ModelCheckpoint._save_checkpoint`` is wrapped to raise right after the file of
``last.ckpt`` at a chosen epoch is on disk -- the earliest moment a real kill could leave that checkpoint behind, and
any later kill (before the next checkpoint) leaves the same files. Nothing of the killed process's memory reaches the
resumed run but what the checkpoint holds; the resumed run is a fresh :func:`run` call on the same directory."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint

from mmea_lightning.lightning.aligner_module import AlignerModule
from mmea_lightning.lightning.iterative import IterativeSeedExpansion
from mmea_lightning.train import run

from .conftest import make_config


class Killed(Exception):
    """Stands for SIGKILL: the process is gone, only the files it wrote remain."""


@pytest.fixture
def harness(monkeypatch):
    """``kill_at[0] = k`` makes the next run die right after it wrote ``last.ckpt`` at epoch ``k``; ``final``
    collects, per run directory, the in-memory weights and seed links at the end of fit."""
    kill_at: list[int | None] = [None]
    final: dict[str, dict] = {}
    save = ModelCheckpoint._save_checkpoint

    def save_then_die(self, trainer, filepath):
        save(self, trainer, filepath)
        if kill_at[0] is not None and Path(filepath).name == "last.ckpt" and trainer.current_epoch == kill_at[0]:
            kill_at[0] = None
            raise Killed(f"killed after {filepath} of epoch {trainer.current_epoch}")

    def capture(self):
        final[str(Path(self.trainer.default_root_dir).resolve())] = {
            "weights": {k: v.detach().clone() for k, v in self.state_dict().items()},
            "seed_links": self.trainer.datamodule.seed_links.clone(),
        }

    monkeypatch.setattr(ModelCheckpoint, "_save_checkpoint", save_then_die)
    monkeypatch.setattr(AlignerModule, "on_fit_end", capture)
    return kill_at, final


def _runs(tmp_path, cache_dir, harness, overrides, kill_epoch):
    """An uninterrupted run and a run killed after epoch ``kill_epoch``'s last.ckpt, then resumed."""
    kill_at, final = harness
    overrides = ["threads=1", "test_checkpoint=last", "callbacks.early_stopping=null", *overrides]
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full = run(make_config(full_dir, cache_dir, overrides))
    kill_at[0] = kill_epoch
    with pytest.raises(Killed):
        run(make_config(killed_dir, cache_dir, overrides))
    assert not (killed_dir / "metrics.json").exists()
    last = killed_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == kill_epoch
    resumed = run(make_config(killed_dir, cache_dir, overrides))
    assert resumed["run"]["resumed_from"] == str(last)
    return (full, final[str(full_dir.resolve())], full_dir), (resumed, final[str(killed_dir.resolve())], killed_dir)


def _assert_identical(uninterrupted, resumed, max_epochs):
    (full, full_state, full_dir), (again, again_state, again_dir) = uninterrupted, resumed
    # iterative training: the same rounds, the same links added (empty lists otherwise)
    assert full["run"]["iterative"] == again["run"]["iterative"]
    assert full["run"]["num_seed_links"] == again["run"]["num_seed_links"]
    assert torch.equal(full_state["seed_links"], again_state["seed_links"])
    weights, other = full_state["weights"], again_state["weights"]
    assert weights.keys() == other.keys()
    differing = [k for k in weights if not torch.equal(weights[k], other[k])]
    assert not differing, f"final weights differ after a resume: {differing[:5]}"
    # the final last.ckpt of both runs: same weights and the same optimiser / scheduler state
    a = torch.load(full_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(again_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == max_epochs - 1
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for state_a, state_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for param, moments in state_a["state"].items():
            for name, value in moments.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b["state"][param][name])), name
    assert a["lr_schedulers"] == b["lr_schedulers"]
    test_keys = sorted(k for k in full if k.startswith("test"))
    assert test_keys and {k: full[k] for k in test_keys} == {k: again[k] for k in test_keys}
    assert full["val/best_mrr"] == again["val/best_mrr"]
    assert full["run"]["perf"]["epochs_run"] == again["run"]["perf"]["epochs_run"] == max_epochs
    assert full["run"]["perf"]["validation_checks"] == again["run"]["perf"]["validation_checks"]


#: 12 epochs, a validation check (and last.ckpt) every 3: checkpoints at epochs 2, 5, 8, 11; batches of 32 of the
#: toy pair's ~108 seed links, so the shuffle decides what each step sees
SHORT = ["model.max_epochs=12", "model.check_val_every_n_epoch=3", "model.batch_size=32"]


@pytest.mark.parametrize("model", ["eva", "meaformer"])  # meaformer: fusion dropout 0.1 and a per-step schedule
def test_resumed_run_equals_uninterrupted_run(model, tmp_path, cache_dir, harness):
    extra = ["model.module.aligner.hidden=32"] if model == "meaformer" else []
    uninterrupted, resumed = _runs(tmp_path, cache_dir, harness, [f"model={model}", *SHORT, *extra], kill_epoch=5)
    _assert_identical(uninterrupted, resumed, max_epochs=12)


def test_resumed_iterative_run_keeps_its_added_links_and_rounds(tmp_path, cache_dir, harness):
    """Checks every epoch from epoch 2 on, a pair joins after 2 stable checks: rounds end at epochs 3, 5, 7, 9 (the
    window of epochs 10-11 would end at the last epoch: not run). The kill after epoch 8 falls after three rounds
    and in the middle of a window (one check of two done), so the links added, the window's survivors and the
    history all have to come back from the checkpoint."""
    overrides = [*SHORT, "training.iterative=true", "training.expansion.start_epoch=2",
                 "training.expansion.every=1", "training.expansion.window=2"]
    uninterrupted, resumed = _runs(tmp_path, cache_dir, harness, overrides, kill_epoch=8)
    history = uninterrupted[0]["run"]["iterative"]
    assert [h["epoch"] for h in history] == [3, 5, 7, 9] and all(h["added"] > 0 for h in history)
    _assert_identical(uninterrupted, resumed, max_epochs=12)


@pytest.mark.parametrize("kill_epoch", [2, 5])
def test_resumed_meaformer_stage_switch_run_equals_uninterrupted_run(kill_epoch, tmp_path, cache_dir, harness):
    """experiment=meaformer_iterative: at its start epoch (3) the best checkpoint is reloaded (weights_only), the
    optimiser moments cleared and the schedule restarted. Killed after epoch 2, the resumed run makes the switch
    itself (from the restored best-checkpoint path); killed after epoch 5, it resumes after the switch and a round,
    in the middle of a window."""
    overrides = ["experiment=meaformer_iterative", *SHORT, "model.module.aligner.hidden=32",
                 "training.expansion.start_epoch=3", "training.expansion.every=1", "training.expansion.window=2"]
    uninterrupted, resumed = _runs(tmp_path, cache_dir, harness, overrides, kill_epoch=kill_epoch)
    assert [h["epoch"] for h in uninterrupted[0]["run"]["iterative"]] == [4, 6, 8, 10]
    _assert_identical(uninterrupted, resumed, max_epochs=12)


def test_iterative_and_datamodule_states_round_trip_weights_only(tmp_path, cache_dir):
    """The pieces of defect 4 one by one: the stability window and history of the callback, the added links and
    history of the DataModule survive torch.save / torch.load(weights_only=True); testing from a checkpoint (the
    best one) leaves the fit's links and history alone."""
    callback = IterativeSeedExpansion(every=1, window=3)
    callback._survivors, callback._checks = {(3, 250), (1, 240)}, 2
    callback.history = [{"epoch": 4, "added": 2, "correct": 1, "precision": 0.5, "seed_links": 110}]
    torch.save(callback.state_dict(), tmp_path / "callback.pt")
    restored = IterativeSeedExpansion(every=1, window=3)
    restored.load_state_dict(torch.load(tmp_path / "callback.pt", weights_only=True))
    assert (restored._survivors, restored._checks, restored.history) == (callback._survivors, 2, callback.history)

    cfg = make_config(tmp_path, cache_dir, [])
    datamodule = instantiate(cfg.data, _convert_="object")
    datamodule.setup("fit")
    initial = datamodule.seed_links.clone()
    datamodule.add_seed_links(np.array([[3, 250], [1, 240]]))
    datamodule.expansion_history.append(dict(callback.history[0]))
    torch.save(datamodule.state_dict(), tmp_path / "datamodule.pt")
    state = torch.load(tmp_path / "datamodule.pt", weights_only=True)
    fresh = instantiate(cfg.data, _convert_="object")
    fresh.setup("fit")
    assert torch.equal(fresh.seed_links, initial)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.seed_links, datamodule.seed_links) and len(fresh.seed_links) == len(initial) + 2
    assert fresh.expansion_history == datamodule.expansion_history
    fresh.trainer = SimpleNamespace(state=SimpleNamespace(fn="test"))
    fresh.load_state_dict({"seed_links": initial, "initial_seed_links": len(initial), "expansion_history": []})
    assert len(fresh.seed_links) == len(initial) + 2 and fresh.expansion_history


def test_every_checkpoint_loads_weights_only(tmp_path, cache_dir):
    """Every checkpoint a run writes (iterative state, random states, the timer, the datamodule's links included)
    holds only tensors and plain Python containers."""
    run(make_config(tmp_path, cache_dir, ["threads=1", *SHORT, "training.iterative=true",
                                          "training.expansion.start_epoch=2", "training.expansion.every=1",
                                          "training.expansion.window=2"]))
    paths = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert len(paths) == 2
    for path in paths:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert "hyper_parameters" not in checkpoint or checkpoint["hyper_parameters"] is not None


def test_spawned_run_reads_its_iterative_rounds_back(tmp_path, cache_dir):
    """With ``ddp_spawn`` the rounds happen in the workers' DataModule; the main process reads links and history
    back from the last checkpoint (``recover_from_checkpoint(..., datamodule)``), as it reads the timings."""
    from mmea_lightning.lightning.callbacks import RunTimer
    from mmea_lightning.train import recover_from_checkpoint

    cfg = make_config(tmp_path, cache_dir, ["threads=1", *SHORT, "training.iterative=true",
                                            "training.expansion.start_epoch=2", "training.expansion.every=1",
                                            "training.expansion.window=2"])
    summary = run(cfg)
    assert summary["run"]["iterative"]
    main_process = instantiate(cfg.data, _convert_="object")  # what the main process of a spawned run holds
    main_process.setup("fit")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/mrr", mode="max")
    recover_from_checkpoint(checkpoint, RunTimer(), main_process)
    assert main_process.expansion_history == summary["run"]["iterative"]
    assert len(main_process.seed_links) == summary["run"]["num_seed_links"]


def test_checkpoints_are_read_weights_only(tmp_path, cache_dir, monkeypatch):
    """The project's own reads of checkpoints (the stage switch's reload of the best checkpoint, reading a spawned
    run's state back) never unpickle arbitrary objects."""
    from mmea_lightning.lightning.callbacks import RunTimer
    from mmea_lightning.train import recover_from_checkpoint

    calls = []
    load = torch.load

    def recording_load(*args, **kwargs):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("mmea_lightning"):  # Lightning's own: not ours
            calls.append(kwargs.get("weights_only"))
        return load(*args, **kwargs)

    summary = run(make_config(tmp_path / "run", cache_dir, ["threads=1", "model.max_epochs=4",
                                                            "model.check_val_every_n_epoch=2"]))
    monkeypatch.setattr(torch, "load", recording_load)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "run" / "checkpoints", monitor="val/mrr", mode="max")
    timer = RunTimer()
    recover_from_checkpoint(checkpoint, timer)
    assert calls == [True]
    assert float(checkpoint.best_model_score) == pytest.approx(summary["val/best_mrr"])
    assert timer.summary["epochs_run"] == 4

    calls.clear()
    run(make_config(tmp_path / "switch", cache_dir, ["threads=1", "experiment=meaformer_iterative", *SHORT,
                                                     "model.module.aligner.hidden=32",
                                                     "training.expansion.start_epoch=3"]))
    assert calls and all(flag is True for flag in calls), calls
