"""The report's aggregation on hand-made run directories with known numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mmea_lightning.report import build_report, main
from mmea_lightning.results.collect import collect
from mmea_lightning.results.tables import aggregate, main_table
from mmea_lightning.run_identity import IDENTITY_FILE, run_identity


def _write_run(path: Path, *, model="mpsea", dataset="fbdb15k", ratio=0.2, seed=42, h1=0.5, mrr=0.6, theta=None,
               ablation=None, seed_quality=None, effective=None, split_seed=0, epochs=500, data=None,
               modalities=("structure",), tested_epoch=None) -> None:
    """A finished run: config.yaml, metrics.json and -- with ``data`` (role -> digest) -- run_identity.json; with
    ``tested_epoch``, the best checkpoint of that epoch was tested (``best-epoch{epoch:03d}.ckpt``)."""
    path.mkdir(parents=True)
    aligner = {"_target_": "x.Y"}
    if theta is not None:
        aligner["theta"] = theta
    if ablation is not None:
        aligner["ablation"] = ablation
    config = OmegaConf.create({"seed": seed, "split_seed": split_seed, "seed_ratio": ratio,
                               "dataset": {"name": dataset}, "data": {"split_seed": split_seed},
                               "model": {"name": model, "max_epochs": epochs, "module": {"aligner": aligner}},
                               "callbacks": {"model_checkpoint": {"filename": "best-epoch{epoch:03d}"}},
                               "paths": {"output_dir": str(path)}})
    OmegaConf.save(config, path / "config.yaml")
    if data is not None:
        (path / IDENTITY_FILE).write_text(json.dumps(run_identity(config, data)))
    metrics = {"test/hits@1": h1, "test/hits@5": h1 + 0.1, "test/hits@10": h1 + 0.2, "test/mrr": mrr,
               "test/mr": 10.0, "test_csls/hits@1": h1 + 0.05, "test_csls/hits@5": h1 + 0.15,
               "test_csls/hits@10": h1 + 0.25, "test_csls/mrr": mrr + 0.05, "val/best_mrr": 0.4,
               "run": {"dataset": dataset, "model": model, "seeds": "gold", "seed": seed,
                       "split": {"seed_ratio": ratio, "split_seed": split_seed}, "surface": False,
                       "iterative_training": False, "modalities_used": list(modalities),
                       "perf": {"seconds_per_epoch": 1.5, "peak_memory_mb": 2048.0, "epochs_run": 10}}}
    if tested_epoch is not None:
        weights = str(path / "checkpoints" / f"best-epoch{tested_epoch:03d}.ckpt")
        metrics["run"]["test_checkpoint"] = {"policy": "best", "weights": weights}
    if seed_quality is not None:
        metrics["run"]["seed_quality"] = seed_quality
    if effective is not None:
        metrics["run"]["ablation_effective"] = effective
    (path / "metrics.json").write_text(json.dumps(metrics))


def test_mean_and_sample_std_over_seeds(tmp_path):
    _write_run(tmp_path / "a", seed=1, h1=0.5, mrr=0.6)
    _write_run(tmp_path / "b", seed=2, h1=0.7, mrr=0.8)
    _write_run(tmp_path / "c", ratio=0.5, h1=0.9, mrr=0.95)
    runs = collect([tmp_path])
    assert len(runs) == 3
    table = aggregate(runs).set_index("seed_ratio")
    assert table.loc[0.2, "n"] == 2 and table.loc[0.5, "n"] == 1
    assert table.loc[0.2, "hits@1_mean"] == pytest.approx(0.6)
    assert table.loc[0.2, "hits@1_std"] == pytest.approx(math.sqrt(0.02))  # sample std of {0.5, 0.7}
    assert table.loc[0.5, "hits@1_std"] == 0.0
    assert aggregate(runs, "test_csls").set_index("seed_ratio").loc[0.2, "mrr_mean"] == pytest.approx(0.75)
    _, markdown = main_table(runs)
    assert "0.6000 ± 0.1414" in markdown and "| 0.9000 |" in markdown
    with pytest.raises(KeyError, match="protocols present"):
        aggregate(runs, "test_1to1")


def test_report_files_ablation_seed_quality_and_plots(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    for i, theta in enumerate((0.5, 0.63, 0.7)):
        _write_run(sweep / f"{i}_theta", theta=theta, h1=0.4 + i / 10)
    _write_run(sweep / "abl_full", dataset="fbyg15k", h1=0.45)
    _write_run(sweep / "abl_oc", dataset="fbyg15k", ablation="wo_oc", h1=0.41)
    _write_run(sweep / "abl_img", dataset="fbyg15k", ablation="wo_img", h1=0.45, effective=False)
    quality = [{"stage": "I", "count": 100, "precision": 0.9, "coverage": 0.2},
               {"stage": "II", "count": 300, "precision": 0.8, "coverage": 0.5}]
    _write_run(tmp_path / "psqe_run", model="eva", seed_quality=quality)
    written = build_report([sweep, tmp_path / "psqe_run"], tmp_path / "out")
    out = tmp_path / "out"
    assert written["num_runs"] == 7
    for name in ("runs.csv", "main_table.md", "main_table.csv", "ablation_table.md", "seed_quality.md"):
        assert (out / name).is_file(), name
    assert (out / "metrics_vs_theta.png").stat().st_size > 1000
    assert not (out / "metrics_vs_alpha.png").exists()  # alpha never varies
    ablation = (out / "ablation_table.md").read_text()
    assert "| mpsea | full |" in ablation and "| mpsea | wo_oc |" in ablation and "0.4100" in ablation
    assert "| mpsea | wo_img (= full on this data) |" in ablation
    assert "| fbdb15k | gold | II | 300 | 0.8000 | 0.5000 |" in (out / "seed_quality.md").read_text()
    main([str(sweep), "--out", str(tmp_path / "cli")])
    assert "| fbdb15k | 0.2 |" in capsys.readouterr().out


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no metrics.json under" in capsys.readouterr().err


DATA = {"triples_1": "a" * 64, "triples_2": "b" * 64, "images": "absent"}


def test_repetitions_pooled_other_data_modalities_or_settings_never(tmp_path, capsys):
    """Three seeds (one also with another split seed) of one setting pool into n=3; a run on other data, one with
    other modalities (an older run: no run_identity.json) and one with other epochs each stay a row of their own,
    although the table's columns cannot tell them apart, and the note names what differs."""
    for i, (seed, split_seed, h1) in enumerate([(1, 0, 0.5), (2, 0, 0.6), (3, 7, 0.7)]):
        _write_run(tmp_path / f"rep{i}", seed=seed, split_seed=split_seed, h1=h1, data=DATA)
    _write_run(tmp_path / "other_data", h1=0.1, data={**DATA, "triples_1": "c" * 64, "images": "d" * 64})
    _write_run(tmp_path / "other_modalities", h1=0.2, modalities=("structure", "image"))
    _write_run(tmp_path / "other_epochs", h1=0.3, epochs=3, data=DATA)
    runs = collect([tmp_path])
    assert runs["setting"].nunique() == 4
    table, markdown = main_table(runs)
    assert len(table) == 4 and sorted(table["n"]) == [1, 1, 1, 3]
    pooled = table[table["n"] == 3].iloc[0]
    assert pooled["hits@1_mean"] == pytest.approx(0.6) and pooled["hits@1_std"] == pytest.approx(0.1)
    assert sorted(table.loc[table["n"] == 1, "hits@1_mean"]) == pytest.approx([0.1, 0.2, 0.3])
    assert "| model | setting | H@1 |" in markdown.splitlines()[0]
    assert "Not pooled" in markdown and "0.6000 ± 0.1000" in markdown
    note = markdown.split("Not pooled", 1)[1]
    for expected in ("data file triples_1 (", "data file images (", "absent", "not recorded", "model.max_epochs (",
                     "modalities used (", "structure+image", "(n=3)"):
        assert expected in note, expected
    assert "seed (" not in note and "split_seed" not in note.split("differ in:", 1)[1]
    assert "data.split_seed" not in note
    build_report([tmp_path], tmp_path / "out")
    assert "identity" not in (tmp_path / "out" / "runs.csv").read_text().splitlines()[0]
    main([str(tmp_path), "--out", str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    assert "Not pooled" in printed and "model.max_epochs (" in printed and "| 0.6000 ± 0.1000 |" in printed


def test_runs_that_differ_only_in_seeds_share_a_setting_with_a_real_run_identity(tmp_path, cache_dir):
    """The run identity of the real composed config: seed and split_seed (also as data.split_seed) do not change
    the setting; a data file's content or any setting does."""
    from mmea_lightning.results.settings import run_setting, setting_id

    from .conftest import make_config

    def setting(overrides, data=DATA, name="x"):
        run_dir = tmp_path / name
        run_dir.mkdir()
        cfg = make_config(run_dir, cache_dir, overrides)
        (run_dir / IDENTITY_FILE).write_text(json.dumps(run_identity(cfg, data)))
        return setting_id(run_setting(run_dir, {"run": {"modalities_used": ["structure"]}}, cfg))

    base = setting([], name="base")
    assert setting(["seed=7", "split_seed=3"], name="seeds") == base
    assert setting([], data={**DATA, "triples_2": "e" * 64}, name="data") != base
    assert setting(["surface=true"], name="surface") != base
    assert setting(["model.max_epochs=3"], name="epochs") != base


def test_ablation_compares_variants_only_with_the_full_model_of_the_same_setting(tmp_path):
    sweep = tmp_path / "sweep"
    _write_run(sweep / "full", dataset="fbyg15k", h1=0.45, data=DATA)
    _write_run(sweep / "full_seed2", dataset="fbyg15k", h1=0.47, seed=2, data=DATA)
    _write_run(sweep / "full_short", dataset="fbyg15k", h1=0.05, epochs=3, data=DATA)  # not the variants' setting
    _write_run(sweep / "wo_oc", dataset="fbyg15k", ablation="wo_oc", h1=0.41, data=DATA)
    build_report([sweep], tmp_path / "out")
    text = (tmp_path / "out" / "ablation_table.md").read_text()
    assert "| mpsea | full | 0.4600 |" in text and "| mpsea | wo_oc | 0.4100 |" in text
    assert "0.0500" not in text and "0.3167" not in text  # the 3-epoch run is no part of the comparison


def test_settings_recorded_by_older_code_compare_equal_to_current_ones(tmp_path):
    """A run recorded before a class moved (old ``_target_``) or before a key was known to be result-free (e.g. the
    last-checkpoint callback) has the same setting as the same run recorded now; a real difference still shows."""
    import json as _json

    from omegaconf import OmegaConf

    from mmea_lightning.results.settings import run_setting, setting_id

    def setting(folder: str, settings: dict) -> dict:
        run_dir = tmp_path / folder
        run_dir.mkdir()
        (run_dir / "run_identity.json").write_text(_json.dumps({"version": 1, "settings": settings, "data": {}}))
        return run_setting(run_dir, {"run": {"modalities_used": ["structure"]}}, OmegaConf.create({}))

    old = setting("old", {"data._target_": "mmea_lightning.data.datamodule.AlignmentDataModule", "seed": 1,
                          "callbacks.last_checkpoint.every_n_epochs": 10, "model.lr": 0.1})
    new = setting("new", {"data._target_": "mmea_lightning.lightning.datamodule.AlignmentDataModule", "seed": 2,
                          "model.lr": 0.1})
    other = setting("other", {"data._target_": "mmea_lightning.lightning.datamodule.AlignmentDataModule",
                              "model.lr": 0.2})
    assert setting_id(old) == setting_id(new)
    assert setting_id(other) != setting_id(new)
