"""The results page's "Speed" section: the bench_aligners / bench_eval ``--json`` files and the speed targets
(``results/speed_targets.yaml``) rendered and checked; bad targets and bad files refused with file and line;
``benchmarks/bench_eval.py --json`` writes the file the page reads."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.report import build_page, main
from mmea_lightning.results.speed import load_benchmarks
from mmea_lightning.results.speed_targets import check_targets, load_speed_targets

from .test_report import DATA, _write_run
from .test_results_page import _anchor, _line, _published, _section

ROOT = Path(__file__).resolve().parents[1]


def _aligner_row(model: str, dataset: str, s_per_epoch: float, projected: float, peak: float, override: str,
                 profile: dict | None = None) -> dict:
    return {"model": model, "dataset": dataset, "overrides": [override], "threads": 2, "entities": 100,
            "modalities": "structure+relation", "load_s": 1.25, "s_per_epoch": s_per_epoch,
            "cpu_s_per_epoch": 2 * s_per_epoch, "epoch_s_min": s_per_epoch - 0.1, "epoch_s_max": s_per_epoch + 0.1,
            "val_s": 0.5, "val_ckpt_s": 0.75, "test_s": 3.0, "max_epochs": 500, "val_every": 10,
            "projected_min": projected, "peak_rss_gib": peak, "wall_s": 20.0, "profile": profile}


PROFILE = {"epoch_s": 2.0, "steps": 1,
           "phases_s": {"forward + loss": 0.9, "backward": 1.0, "optimizer step (+ clipping, logging)": 0.1},
           "modules_s": {"encoders": 0.6, "encoders.graph_encoder": 0.5, "tiny": 0.001},
           "module_calls": {"encoders": 1, "encoders.graph_encoder": 1, "tiny": 3},
           "operators": [{"name": "aten::mm", "self_s": 1.2, "calls": 15, "share": 0.6}]}


def _eval_rows(dataset: str, shared_s: float, per_protocol_s: float) -> list[dict]:
    common = {"dataset": dataset, "model": "eva", "threads": 2, "dim": 300, "test_links": 10500, "kg1": 19388,
              "kg2": 19572, "forward_s": 0.3, "peak_rss_mib": 1400.0}
    return [{**common, "path": "per_protocol", "eval_s": per_protocol_s, "eval_cpu_s": 2 * per_protocol_s,
             "eval_extra_mib": 1000.0},
            {**common, "path": "shared", "eval_s": shared_s, "eval_cpu_s": 2 * shared_s, "eval_extra_mib": 600.0}]


def _benchmarks(folder: Path, eva_epoch: float = 1.5, eval_s: float = 2.0, profile: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [_aligner_row("mpsea", "fbdb15k", 2.2, 21.4, 2.6, "experiment=mpsea"),
            _aligner_row("eva", "dbp15k_zh_en", eva_epoch, 15.0, 1.9, "experiment=eva_structure",
                         PROFILE if profile else None)]
    (folder / "aligners.json").write_text(json.dumps({"args": {"epochs": 3, "warmup": 1, "threads": 2,
                                                               "profile": profile}, "rows": rows}))
    summary = [{"dataset": "dbp15k_zh_en", "model": "eva", "shared_s": eval_s, "per_protocol_s": 6 * eval_s,
                "shared_cpu_s": 2 * eval_s, "per_protocol_cpu_s": 12 * eval_s, "shared_extra_mib": 600.0,
                "per_protocol_extra_mib": 1000.0, "speedup": 6.0, "cpu_speedup": 6.0, "max_metric_diff": 0.0}]
    (folder / "eval.json").write_text(json.dumps({
        "args": {"threads": 2, "repeat": 1, "checkpoint": None, "commit": "abc1234", "cpus": 2,
                 "loadavg": [0.1, 0.2, 0.3]},
        "rows": _eval_rows("dbp15k_zh_en", eval_s, 6 * eval_s), "summary": summary}))
    (folder / "README.md").write_text("# Speed benchmarks\n\nMeasured at commit `abc1234` on an idle machine.\n")
    return folder


TARGETS = """sources:
  issue: {title: "The issue", where: "part 5"}
targets:
  - name: MPSEA run
    what: "fits 30 minutes"
    source: issue
    measured: {benchmark: bench_aligners, model: mpsea, dataset: fbdb15k, field: projected_min}
    unit: min
    at_most: 30
  - name: EVA epoch
    what: "half the public code"
    source: issue
    measured: {benchmark: bench_aligners, model: eva, dataset: dbp15k_zh_en, override: experiment=eva_structure,
               field: s_per_epoch}
    unit: s
    at_most: {factor: 0.5, of: 3.2, of_what: "the public code's s/epoch"}
  - name: Evaluation
    what: "1.5 EVA epochs"
    source: issue
    measured: {benchmark: bench_eval, model: eva, dataset: dbp15k_zh_en, path: shared, field: eval_s}
    unit: s
    at_most:
      factor: 1.5
      of: {benchmark: bench_aligners, model: eva, dataset: dbp15k_zh_en, field: s_per_epoch}
  - name: MEAformer epoch
    what: "10x the public code"
    source: issue
    measured: {benchmark: bench_aligners, model: meaformer, dataset: fbdb15k, field: s_per_epoch}
    unit: s
    at_most: {factor: 0.1, of: 55, of_what: "the public code's s/epoch"}
"""


def _page(tmp_path: Path, targets: str = TARGETS, **benchmarks) -> str:
    _write_run(tmp_path / "runs" / "mpsea_fbdb15k_r0.2_s1", h1=0.4, data=DATA)
    (tmp_path / "targets.yaml").write_text(targets)
    build_page([tmp_path / "runs"], _published(tmp_path / "pub.yaml", _anchor()), tmp_path / "docs" / "results.md",
               benchmark_folder=_benchmarks(tmp_path / "bench", **benchmarks),
               speed_targets=tmp_path / "targets.yaml")
    return (tmp_path / "docs" / "results.md").read_text(encoding="utf-8")


def _target(page: str, name: str) -> list[str]:
    return _line(_section(page, "Speed"), f"| {name} |").split(" | ")


def test_speed_section_renders_the_benchmark_files_and_checks_the_targets(tmp_path):
    page = _page(tmp_path)
    speed = _section(page, "Speed")
    assert _target(page, "MPSEA run")[3:] == [
        "21.400 min (bench_aligners: mpsea / fbdb15k `projected_min`)", "≤ 30.00 min", "yes |"]
    assert _target(page, "EVA epoch")[3:] == [
        "1.500 s (bench_aligners: eva / dbp15k_zh_en (experiment=eva_structure) `s_per_epoch`)",
        "≤ 0.5 × the public code's s/epoch (3.2 s) = 1.60 s", "yes |"]
    assert _target(page, "Evaluation")[4:] == [
        "≤ 1.5 × bench_aligners: eva / dbp15k_zh_en `s_per_epoch` (1.500 s) = 2.25 s", "yes |"]
    meaformer = _target(page, "MEAformer epoch")  # no row: not measured, neither yes nor no
    assert meaformer[3].startswith("not measured") and meaformer[5] == "— |"
    assert ("| eva | dbp15k_zh_en | structure+relation | 2 | 1.2 | 1.500 | 3.000 | 1.400 | 1.600 | 0.5 | 0.8 | "
            "3.0 | 500 | 15.0 | 1.90 |") in speed
    assert ("| dbp15k_zh_en | eva | 2 | 300 | 10,500 | 19,388 / 19,572 | 2.00 | 12.00 | 4.00 | 24.00 | 600 | 1000 | "
            "6.0x | 6.0x | 0 |") in speed
    assert "commit abc1234, CPUs 2, load average at the start 0.10 / 0.20 / 0.30" in speed
    assert "Measured at commit `abc1234` on an idle machine." in speed and "# Speed benchmarks" not in speed
    profile = page.split("### Profile: eva / dbp15k_zh_en", 1)[1]
    assert "| backward | 1.000 | 50.0% |" in profile and "| `aten::mm` | 1.200 | 60.0% | 15 |" in profile
    assert "&nbsp;&nbsp;&nbsp;&nbsp;`encoders.graph_encoder` | 0.500 | 25.0% | 1 |" in profile
    assert "`tiny`" not in profile  # under 0.5% of the epoch
    # forward + loss outside the top-level sub-modules: 0.9 - 0.6 - 0.001
    assert "| (training loss outside sub-modules: inline losses, gathers) | 0.299 | 15.0% | — |" in profile


def test_a_target_not_met_shows_no_and_no_profile_no_profile_section(tmp_path):
    page = _page(tmp_path, eva_epoch=1.7, eval_s=3.0, profile=False)
    assert _target(page, "EVA epoch")[5] == "no |"  # 1.7 > 0.5 x 3.2
    assert _target(page, "Evaluation")[5] == "no |"  # 3.0 > 1.5 x 1.7
    assert _target(page, "MPSEA run")[5] == "yes |"
    assert "### Profile" not in page


BAD_TARGETS = [
    ("    measured: {benchmark: bench_foo, model: m, dataset: d, field: s_per_epoch}\n    unit: s\n    at_most: 1\n",
     "benchmark 'bench_foo' is unknown", 7),
    ("    measured: {benchmark: bench_aligners, model: m, dataset: d, field: speed}\n    unit: s\n    at_most: 1\n",
     "field 'speed' is not a figure of bench_aligners", 7),
    ("    measured: {benchmark: bench_aligners, model: m, dataset: d, field: s_per_epoch, path: shared}\n"
     "    unit: s\n    at_most: 1\n", "path 'shared' is not an evaluation path of bench_aligners", 7),
    ("    measured: {benchmark: bench_eval, model: m, dataset: d, field: eval_s}\n    unit: s\n    at_most: 1\n",
     "gives no path", 7),
    ("    measured: {benchmark: bench_aligners, model: m, dataset: d, field: s_per_epoch}\n    unit: s\n"
     "    at_most: -2\n", "at_most is -2.0, not a positive number", 9),
    ("    measured: {benchmark: bench_aligners, model: m, dataset: d, field: s_per_epoch}\n    unit: s\n"
     "    at_most: {factor: 0.5, of: 3.2}\n", "without of_what", 9),
    ("    measured: {benchmark: bench_aligners, model: m, dataset: d, field: s_per_epoch}\n    unit: s\n",
     "lacks at_most", 4),
]


@pytest.mark.parametrize(("tail", "problem", "line"), BAD_TARGETS)
def test_bad_targets_are_refused_with_file_and_line(tmp_path, tail, problem, line):
    path = tmp_path / "targets.yaml"
    path.write_text("sources:\n  issue: {title: t, where: w}\ntargets:\n  - name: n\n    what: w\n    source: issue\n"
                    + tail)
    with pytest.raises(DataFormatError, match=f"targets.yaml, line {line}: .*{problem}.* Fix: "):
        load_speed_targets(path)


def test_unknown_source_duplicate_names_and_ambiguous_rows_are_refused(tmp_path):
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.replace("    source: issue\n", "    source: issu\n", 1))
    with pytest.raises(DataFormatError, match=r"targets.yaml, line 6: source 'issu' is not among sources"):
        load_speed_targets(path)
    path.write_text(TARGETS.replace("name: EVA epoch", "name: MPSEA run"))
    with pytest.raises(DataFormatError, match=r"line 10: a second target named 'MPSEA run' \(the first is on line 4"):
        load_speed_targets(path)
    path.write_text(TARGETS)
    folder = _benchmarks(tmp_path / "bench")
    (folder / "aligners2.json").write_text((folder / "aligners.json").read_text())  # every row twice
    with pytest.raises(DataFormatError, match=r"targets.yaml, line 7: .*mpsea / fbdb15k .* matches 2 benchmark rows "
                       r"\(aligners.json, aligners2.json\)"):
        check_targets(load_speed_targets(path), load_benchmarks(folder).by_benchmark())


def test_bad_benchmark_files_are_named(tmp_path):
    folder = _benchmarks(tmp_path / "bench")
    (folder / "eval.json").write_text('{"args": {}, "rows": [{"dataset": "d", "path": "shared", "eval_s": 1.0}]}')
    with pytest.raises(DataFormatError, match=r"eval.json: row 0 lacks \['model'"):
        load_benchmarks(folder)
    (folder / "eval.json").write_text(json.dumps({"args": {}, "rows": _eval_rows("d", 1.0, 6.0)}))
    with pytest.raises(DataFormatError, match="eval.json: a bench_eval file without its summary"):
        load_benchmarks(folder)
    (folder / "eval.json").write_text('{"args": {}, "rows": [{"x": 1}]}')
    with pytest.raises(DataFormatError, match="eval.json: its rows are neither"):
        load_benchmarks(folder)
    (folder / "eval.json").write_text('{"args": ')
    with pytest.raises(DataFormatError, match="eval.json, line 1: not JSON"):
        load_benchmarks(folder)


def test_command_line_needs_both_benchmarks_and_targets(tmp_path, capsys):
    _write_run(tmp_path / "runs" / "mpsea_fbdb15k_r0.2_s1", h1=0.4, data=DATA)
    published = str(_published(tmp_path / "pub.yaml", _anchor()))
    base = [str(tmp_path / "runs"), "--published", published, "--markdown", str(tmp_path / "page.md")]
    with pytest.raises(SystemExit):
        main([*base, "--benchmarks", str(_benchmarks(tmp_path / "bench"))])
    assert "--speed-targets" in capsys.readouterr().err and not (tmp_path / "page.md").exists()
    (tmp_path / "bad.yaml").write_text(TARGETS.replace("at_most: 30", "at_most: thirty"))
    with pytest.raises(SystemExit):
        main([*base, "--benchmarks", str(tmp_path / "bench"), "--speed-targets", str(tmp_path / "bad.yaml")])
    assert "bad.yaml, line 9" in capsys.readouterr().err and not (tmp_path / "page.md").exists()


def test_the_committed_targets_read_and_find_their_figures():
    """Every committed target reads one figure of the committed benchmark files (a renamed model, dataset or field
    would leave it unmeasured)."""
    results = check_targets(load_speed_targets(ROOT / "results/speed_targets.yaml"),
                            load_benchmarks(ROOT / "results/benchmarks").by_benchmark())
    assert len(results) == 6
    assert all(r.value is not None and r.limit is not None and r.met is not None for r in results)


def _bench_eval():
    spec = importlib.util.spec_from_file_location("bench_eval", ROOT / "benchmarks" / "bench_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_eval_json_writes_rows_and_summary_the_page_reads(tmp_path, monkeypatch):
    """``bench_eval.py --json``: the per-process measurements (mocked: their RESULT lines) become rows, a summary per
    (dataset, model) and args with the commit and machine, in a file :func:`load_benchmarks` reads."""
    bench_eval = _bench_eval()
    real_run = subprocess.run
    seconds = {"shared": 2.0, "per_protocol": 10.0}

    def fake_run(command, **kwargs):
        if "--one" not in command:
            return real_run(command, **kwargs)  # git rev-parse / status
        path, dataset = command[command.index("--paths") + 1], command[command.index("--datasets") + 1]
        row = next(r for r in _eval_rows(dataset, seconds["shared"], seconds["per_protocol"]) if r["path"] == path)
        metrics = {"test/hits@1": 0.5 + (0.25 if path == "shared" else 0.0), "test_csls/hits@1": 0.6}
        return subprocess.CompletedProcess(command, 0, "noise\nRESULT " + json.dumps({**row, "metrics": metrics}), "")

    monkeypatch.setattr(bench_eval.subprocess, "run", fake_run)
    out = tmp_path / "bench" / "eval.json"
    monkeypatch.setattr(sys, "argv", ["bench_eval.py", "--data-dir", str(tmp_path), "--datasets", "dbp15k_zh_en",
                                      "fbdb15k", "--json", str(out)])
    bench_eval.main()
    data = json.loads(out.read_text())
    assert [(r["dataset"], r["path"]) for r in data["rows"]] == [
        ("dbp15k_zh_en", "per_protocol"), ("dbp15k_zh_en", "shared"), ("fbdb15k", "per_protocol"),
        ("fbdb15k", "shared")]
    assert all("metrics" not in r for r in data["rows"])
    first = data["summary"][0]
    assert (first["dataset"], first["model"], first["speedup"], first["cpu_speedup"]) == ("dbp15k_zh_en", "eva", 5, 5)
    assert first["max_metric_diff"] == pytest.approx(0.25)
    assert data["args"]["threads"] == 2 and data["args"]["cpus"] >= 1 and len(data["args"]["loadavg"]) == 3
    assert "commit" in data["args"]
    loaded = load_benchmarks(out.parent)
    assert [f.benchmark for f in loaded.files] == ["bench_eval"] and len(loaded.files[0].summary) == 2
