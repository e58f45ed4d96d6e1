"""docs/results.md: the committed page equals a fresh regeneration from the committed run summaries, and the page's
logic (mean ± std, anchors and differences, missing cells, variants, no pooling across settings) on hand-made runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.report import build_page, main
from mmea_lightning.results.collect import checkpoint_epoch, collect
from mmea_lightning.results.page import page_rows, run_label
from mmea_lightning.results.published import Setting, load_published

from .test_report import DATA, _write_run

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ("results/anchors", "results/grid")
PUBLISHED = "results/published.yaml"
PAGE = "docs/results.md"
SEEDS = "results/seeds"
BENCHMARKS = "results/benchmarks"
SPEED_TARGETS = "results/speed_targets.yaml"
ARGS = (*ROOTS, "--published", PUBLISHED, "--markdown", PAGE, "--seed-quality", SEEDS, "--benchmarks", BENCHMARKS,
        "--speed-targets", SPEED_TARGETS)
COMMAND = "python -m mmea_lightning.report " + " ".join(ARGS)


def test_committed_page_equals_its_regeneration(tmp_path, monkeypatch):
    """The committed summaries and published figures, copied into an empty directory, regenerate the committed page
    and every committed plot byte for byte (and no plot that is not committed)."""
    for source in (*ROOTS, PUBLISHED, SEEDS, BENCHMARKS, SPEED_TARGETS):
        target = tmp_path / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("report"))
        else:
            shutil.copy(ROOT / source, target)
    monkeypatch.chdir(tmp_path)
    main(list(ARGS))
    fresh, committed = tmp_path / PAGE, ROOT / PAGE
    assert fresh.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), \
        f"docs/results.md is stale: regenerate it with `{COMMAND}`"
    folder, committed_folder = fresh.with_suffix(""), committed.with_suffix("")
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(p.name for p in committed_folder.glob("*.png"))
    for plot in folder.glob("*.png"):
        assert plot.read_bytes() == (committed_folder / plot.name).read_bytes(), \
            f"{plot.name} differs from the committed plot: regenerate with `{COMMAND}`"


def _published(path: Path, anchors: str, grid: str = "- {dataset: fbdb15k, seed_ratio: 0.2}",
               protocol: str = "test") -> Path:
    path.write_text(f"""protocol: {protocol}
sources:
  paper: {{title: "A paper", where: "Table 1"}}
grid:
  setting: {{seeds: gold, names: false, images: false, iterative: false}}
  pairs:
    {grid}
anchors:
{anchors}
""", encoding="utf-8")
    return path


GOLD = "seeds: gold, names: false, images: false, iterative: false"


def _anchor(model="mpsea", dataset="fbdb15k", ratio=0.2, metrics="hits@1: 0.432, mrr: 0.498", setting=GOLD) -> str:
    return f"  - {{model: {model}, dataset: {dataset}, seed_ratio: {ratio}, {setting}, {metrics}, source: paper}}"


def _page(tmp_path, published: Path) -> str:
    build_page([tmp_path / "runs"], published, tmp_path / "docs" / "results.md")
    return (tmp_path / "docs" / "results.md").read_text(encoding="utf-8")


def _section(page: str, title: str) -> str:
    """The text of the page's section ``## <title>...`` up to the next section."""
    return page.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def _line(text: str, start: str) -> str:
    found = [line for line in text.splitlines() if line.startswith(start)]
    assert len(found) == 1, (start, found)
    return found[0]


def test_mean_std_anchor_difference_and_best_epochs(tmp_path):
    runs = tmp_path / "runs"
    for seed, h1, epoch in ((1, 0.30, 189), (2, 0.32, 179), (3, 0.34, 249)):
        _write_run(runs / f"mpsea_fbdb15k_r0.2_s{seed}", seed=seed, h1=h1, mrr=h1 + 0.1, data=DATA,
                   tested_epoch=epoch)
    _write_run(runs / "mpsea_fbyg15k_r0.2_s1", dataset="fbyg15k", h1=0.5, mrr=0.55, data=DATA)
    page = _page(tmp_path, _published(tmp_path / "pub.yaml", _anchor()))
    main_section = _section(page, "Main table")
    row = _line(main_section, "| mpsea | fbdb15k | 0.2 |").split(" | ")
    # n, H@1 mean ± sample std, published, Δ; H@10 (no anchor); MRR; best epochs by seed; s/epoch; peak memory
    assert row[3:7] == ["3", "0.320 ± 0.020", "0.432", "-0.112"]
    assert row[7:10] == ["0.520 ± 0.020", "—", "—"]
    assert row[10:13] == ["0.420 ± 0.020", "0.498", "-0.078"]
    assert row[13:16] == ["189, 179, 249", "1.50", "2048 |"]
    single = _line(main_section, "| mpsea | fbyg15k | 0.2 |").split(" | ")
    assert single[3:7] == ["1", "0.500", "—", "—"] and single[13] == "—"  # one run: no ± ; no anchor, no epoch


def test_grid_missing_cells_and_published_only_systems(tmp_path):
    runs = tmp_path / "runs"
    _write_run(runs / "mclea_fbdb15k_r0.2_s1", model="mclea", h1=0.4, data=DATA)
    _write_run(runs / "mclea_fbdb15k_r0.5_s1", model="mclea", ratio=0.5, h1=0.6, data=DATA)  # not a grid ratio
    grid = "- {dataset: fbdb15k, seed_ratio: 0.2}\n    - {dataset: fbyg15k, seed_ratio: 0.2}"
    anchors = "\n".join([_anchor(model="alinet", dataset="fbyg15k", metrics="hits@1: 0.25"),
                         _anchor(model="mclea", dataset="fbyg15k", metrics="hits@1: 0.3")])
    page = _page(tmp_path, _published(tmp_path / "pub.yaml", anchors, grid=grid))
    grid_section = _section(page, "Grid")
    assert "| model | fbdb15k 0.2 | fbyg15k 0.2 |" in grid_section
    assert "| mclea | 0.400 | — |" in grid_section  # the 0.5 run is no grid cell; no mclea run on fbyg15k
    assert "| alinet (published) | — | 0.250 |" in grid_section
    assert "0.600" not in grid_section and "| mclea | fbdb15k | 0.5 | 1 | 0.600 |" in page
    assert (tmp_path / "docs" / "results" / "grid_hits1.png").stat().st_size > 1000


def test_runs_of_different_settings_are_never_pooled_and_variants_stay_apart(tmp_path):
    runs = tmp_path / "runs"
    _write_run(runs / "a" / "mpsea_fbdb15k_r0.2_s1", seed=1, h1=0.30, data=DATA)
    _write_run(runs / "b" / "mpsea_fbdb15k_r0.2_s1", seed=1, h1=0.10, epochs=3, data=DATA)  # another setting
    _write_run(runs / "mpseafast_fbdb15k_r0.2_s1", seed=1, h1=0.20, epochs=50, data=DATA)  # a variant
    _write_run(runs / "mpsea_fbdb15k_r0.2_s2", seed=2, h1=0.10, data=DATA, modalities=("structure", "image"))
    page = _page(tmp_path, _published(tmp_path / "pub.yaml", _anchor()))
    main_section = _section(page, "Main table")
    no_images = main_section.split("### gold seeds, no names, images", 1)[0]
    assert "| model | dataset | ratio | setting id | n |" in no_images
    assert no_images.count("| mpsea | fbdb15k | 0.2 |") == 2 and "| 1 | 0.300 | 0.432 | -0.132 |" in no_images
    assert "| 1 | 0.100 | 0.432 | -0.332 |" in no_images and "±" not in no_images and "| 2 |" not in no_images
    assert "Not pooled" in no_images and "model.max_epochs (" in no_images
    with_images = main_section.split("### gold seeds, no names, images", 1)[1]
    assert "| mpsea | fbdb15k | 0.2 | 1 | 0.100 | — | — |" in with_images  # no anchor for another setting
    other = _section(page, "Other runs")
    assert "| mpseafast | mpsea | fbdb15k | 0.2 | gold seeds, no names, no images | 1 | 0.200 | 0.432 |" in other
    assert other.count("differs from the standard run") == 2 and "model.max_epochs (500, 50)" in other
    assert "0.200" not in main_section and "0.200" not in _section(page, "Grid")


def test_anchors_only_for_their_protocol(tmp_path):
    _write_run(tmp_path / "runs" / "mpsea_fbdb15k_r0.2_s1", h1=0.3, data=DATA)
    published = _published(tmp_path / "pub.yaml", _anchor(), protocol="test_csls")
    page = _page(tmp_path, published)
    assert "use protocol `test_csls`, not `test`" in page and "| 1 | 0.300 | — | — |" in page
    rows = page_rows(collect([tmp_path / "runs"]), load_published(published), "test_csls")
    assert rows.loc[0, "anchor"].metrics["hits@1"] == pytest.approx(0.432)


def test_every_test_protocol_beside_the_published_figure(tmp_path):
    runs = tmp_path / "runs"
    for seed, h1 in ((1, 0.30), (2, 0.34)):
        _write_run(runs / f"mpsea_fbdb15k_r0.2_s{seed}", seed=seed, h1=h1, data=DATA)
    _write_run(runs / "mpseafast_fbdb15k_r0.2_s1", h1=0.20, epochs=50, data=DATA)  # a variant: its own row
    page = _page(tmp_path, _published(tmp_path / "pub.yaml", _anchor()))
    section = _section(page, "Every test protocol")
    # the runs report `test` and `test_csls` only (CSLS = plain + 0.05 in _write_run): two columns, the anchor last
    assert "| label | model | dataset | ratio | setting | n | `test` | `test_csls` | pub. H@1 |" in section
    setting = "| fbdb15k | 0.2 | gold seeds, no names, no images |"
    assert f"| mpsea | mpsea {setting} 2 | 0.320 ± 0.028 | 0.370 ± 0.028 | 0.432 |" in section
    assert f"| mpseafast | mpsea {setting} 1 | 0.200 | 0.250 | 0.432 |" in section


def test_plots_are_the_same_bytes_every_time(tmp_path):
    _write_run(tmp_path / "runs" / "mpsea_fbdb15k_r0.2_s1", h1=0.3, data=DATA)
    _write_run(tmp_path / "runs" / "mpsea_fbdb15k_r0.2_s2", seed=2, h1=0.35, data=DATA)
    published = _published(tmp_path / "pub.yaml", _anchor())
    first = build_page([tmp_path / "runs"], published, tmp_path / "one" / "results.md")
    second = build_page([tmp_path / "runs"], published, tmp_path / "two" / "results.md")
    assert [p.name for p in first["plots"]] == ["grid_hits1.png", "grid_mrr.png"]
    for a, b in zip(first["plots"], second["plots"], strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_run_label_and_checkpoint_epoch():
    assert run_label("results/grid/mcleamc512_dbp15k_zh_en_r0.3_s42", "mclea", "dbp15k_zh_en") == "mcleamc512"
    assert run_label("results/grid/mclea_dbp15k_zh_en_r0.3_s42", "mclea", "dbp15k_zh_en") == "mclea"
    assert run_label("multirun/2026-11-21/3", "eva", "fbdb15k") == "eva"  # not named by the convention
    config = {"callbacks": {"model_checkpoint": {"filename": "best-epoch{epoch:03d}"}}}
    from omegaconf import OmegaConf

    config = OmegaConf.create(config)
    best = {"test_checkpoint": {"policy": "best", "weights": "/r/checkpoints/best-epoch059.ckpt"}}
    assert checkpoint_epoch(best, config) == 59
    versioned = {"test_checkpoint": {"policy": "best", "weights": "/r/checkpoints/best-epoch120-v1.ckpt"}}
    assert checkpoint_epoch(versioned, config) == 120
    assert checkpoint_epoch({"test_checkpoint": {"policy": "last", "weights": "/r/last.ckpt"}}, config) is None
    lightning_style = OmegaConf.create({"callbacks": {"model_checkpoint": {"filename": "{epoch}-{step}"}}})
    assert checkpoint_epoch({"test_checkpoint": {"policy": "best", "weights": "x/7-800.ckpt"}}, lightning_style) == 7


def test_setting_of_a_run():
    assert Setting.of_run({"seeds": "gold", "surface": False, "modalities": "structure,image",
                           "iterative": False}) == Setting("gold", False, True, False)
    assert Setting("psqe", True, False, True).label == "psqe seeds, names, no images, iterative"


@pytest.mark.parametrize(("anchors", "problem", "line"), [
    (_anchor() + "\n" + _anchor(metrics="hits@1: 0.5"), "a second anchor for mpsea / fbdb15k / 0.2", 10),
    (_anchor().replace("source: paper", "source: nowhere"), "source 'nowhere' is not among sources", 9),
    (_anchor(metrics="hits@1: 65.8"), "not a fraction in [0, 1]", 9),
    (_anchor(metrics="hits@1: 0.4").replace("seeds: gold, ", ""), "lacks seeds", 9),
    (_anchor(metrics="hits@1: 0.4").replace("names: false", "names: 'no'"), "names is 'no', not a bool", 9),
    (_anchor(metrics="hits@3: 0.4"), "unknown keys ['hits@3']", 9),
    ("  - {model: [", "not valid YAML", None),
])
def test_published_file_errors_name_the_line_and_the_fix(tmp_path, anchors, problem, line):
    path = _published(tmp_path / "pub.yaml", anchors)
    with pytest.raises(DataFormatError) as err:
        load_published(path)
    assert problem in str(err.value) and "Fix:" in str(err.value)
    if line is not None:
        assert err.value.line == line and f"pub.yaml, line {line}:" in str(err.value)


def test_the_committed_published_file_reads():
    published = load_published(ROOT / PUBLISHED)
    assert published.protocol == "test" and len(published.grid) == 5
    mclea = published.anchor("mclea", "dbp15k_zh_en", 0.3, published.grid_setting)
    assert mclea is not None and set(mclea.metrics) == {"hits@1", "hits@10", "mrr"}
    assert all(not a.setting.images and not a.setting.names for a in published.anchors)


def test_command_line_needs_published_and_reports_bad_files(tmp_path, capsys):
    _write_run(tmp_path / "runs" / "mpsea_fbdb15k_r0.2_s1", h1=0.3, data=DATA)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "runs"), "--markdown", str(tmp_path / "page.md")])
    assert "--markdown needs --published" in capsys.readouterr().err
    bad = _published(tmp_path / "bad.yaml", _anchor(metrics="mrr: 2"))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "runs"), "--published", str(bad), "--markdown", str(tmp_path / "page.md")])
    assert "bad.yaml, line 9" in capsys.readouterr().err and not (tmp_path / "page.md").exists()
    main([str(tmp_path / "runs"), "--published", str(_published(tmp_path / "ok.yaml", _anchor())),
          "--markdown", str(tmp_path / "page.md")])
    printed = capsys.readouterr().out
    assert "results page:" in printed and "| 0.3000 |" in printed  # the tables are still printed
    assert not (tmp_path / "runs" / "report").exists()  # no report files without --out


def test_validation_checks_of_a_probed_run(tmp_path):
    """A run with ``run.test_probe`` gets a row (validation- vs test-selected check, the gain) and a curve; a run
    without one gets neither."""
    import json

    probed = tmp_path / "runs" / "mclea_fbdb15k_r0.2_s1"
    _write_run(probed, model="mclea", h1=0.4, mrr=0.5, data=DATA, tested_epoch=19)
    _write_run(tmp_path / "runs" / "mclea_fbdb15k_r0.2_s2", model="mclea", seed=2, h1=0.41, data=DATA)
    metrics = json.loads((probed / "metrics.json").read_text())
    checks = [{"epoch": 9, "hits@1": 0.38, "mrr": 0.48, "val_mrr": 0.50},
              {"epoch": 19, "hits@1": 0.40, "mrr": 0.50, "val_mrr": 0.55},
              {"epoch": 29, "hits@1": 0.43, "mrr": 0.53, "val_mrr": 0.54}]
    metrics["run"]["test_probe"] = {
        "protocol": "standard", "checks": checks, "test_selected": {"by": "mrr", **checks[2]},
        "validation_selected": checks[1], "test_selection_gain": {"hits@1": 0.03, "mrr": 0.03}}
    (probed / "metrics.json").write_text(json.dumps(metrics))
    page = _page(tmp_path, _published(tmp_path / "pub.yaml", _anchor()))
    section = _section(page, "Validation checks")
    row = _line(section, f"| `{probed.as_posix()}` |").split(" | ")
    assert row[1:] == ["standard", "3", "19", "0.400", "0.500", "29", "0.430", "0.530", "+0.030", "+0.030 |"]
    assert "_s2`" not in section and "never a result" in section
    curves = sorted((tmp_path / "docs" / "results").glob("checks_*.png"))
    assert len(curves) == 1 and curves[0].name.endswith("mclea_fbdb15k_r0.2_s1.png")
    assert f"(results/{curves[0].name})" in section


def test_seed_quality_rows_are_tabled_and_bad_files_named(tmp_path):
    from mmea_lightning.results.seed_benchmarks import load_seed_benchmarks, seed_benchmark_table

    (tmp_path / "a.json").write_text('[{"dataset": "d", "generator": "psqe", "surface": true, "stage": "stage1", '
                                     '"count": 1000, "precision": 0.5, "correct": 500, "coverage": 0.1, '
                                     '"seconds": 12.4, "info": {"raw_weights": {"name_sbert": 0.9, "attribute": 0.1}}},'
                                     ' {"dataset": "d", "generator": "pivot", "stage": "-", "error": "no modality"}]')
    rows = load_seed_benchmarks(tmp_path)
    assert seed_benchmark_table(rows) == [["d", "psqe", "yes", "stage1", "1,000", "0.500", "500", "0.100", "12",
                                           "name_sbert 0.900, attribute 0.100"]]
    (tmp_path / "b.json").write_text('[{"dataset": "d"}]')
    with pytest.raises(DataFormatError, match="b.json.*lacks"):
        load_seed_benchmarks(tmp_path)
    (tmp_path / "b.json").write_text('{"dataset": ')
    with pytest.raises(DataFormatError, match="b.json, line 1"):
        load_seed_benchmarks(tmp_path)
