"""A run killed right after it wrote ``checkpoints/last.ckpt`` and resumed in the same run directory ends exactly
where an uninterrupted run ends: bit-identical final weights and optimiser state, the same test metrics, the same
epoch count, and for iterative training the same added seed links and round history (issue 27, defects 4 and 5).

The kill is simulated in-process: ``ModelCheckpoint._save_checkpoint`` is wrapped to raise right after the file of
``last.ckpt`` at a chosen epoch is on disk -- the earliest moment a real kill could leave that checkpoint behind, and
any later kill (before the next checkpoint) leaves the same files. Nothing of the killed process's memory reaches the
resumed run but what the checkpoint holds; the resumed run is a fresh :func:`run` call on the same directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mmea_lightning.lightning.aligner_module import AlignerModule
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
