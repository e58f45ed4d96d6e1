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


def _write_run(path: Path, *, model="mpsea", dataset="fbdb15k", ratio=0.2, seed=42, h1=0.5, mrr=0.6, theta=None,
               ablation=None, seed_quality=None, effective=None) -> None:
    path.mkdir(parents=True)
    aligner = {"_target_": "x.Y"}
    if theta is not None:
        aligner["theta"] = theta
    if ablation is not None:
        aligner["ablation"] = ablation
    OmegaConf.save(OmegaConf.create({"seed": seed, "seed_ratio": ratio, "dataset": {"name": dataset},
                                     "model": {"name": model, "module": {"aligner": aligner}}}),
                   path / "config.yaml")
    metrics = {"test/hits@1": h1, "test/hits@5": h1 + 0.1, "test/hits@10": h1 + 0.2, "test/mrr": mrr,
               "test/mr": 10.0, "test_csls/hits@1": h1 + 0.05, "test_csls/hits@5": h1 + 0.15,
               "test_csls/hits@10": h1 + 0.25, "test_csls/mrr": mrr + 0.05, "val/best_mrr": 0.4,
               "run": {"dataset": dataset, "model": model, "seeds": "gold", "seed": seed,
                       "split": {"seed_ratio": ratio, "split_seed": 0}, "surface": False,
                       "iterative_training": False, "modalities_used": ["structure"],
                       "perf": {"seconds_per_epoch": 1.5, "peak_memory_mb": 2048.0, "epochs_run": 10}}}
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
