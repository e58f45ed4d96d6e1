"""The results page (``docs/results.md``): committed run summaries beside the published figures, generated.

Every figure on the page comes from the runs' ``metrics.json`` / ``config.yaml`` / ``run_identity.json`` and from the
published figures (:mod:`.published`); nothing is typed. The page holds

* the grid: Hits@1 of every model on every pair of the published grid, in the grid's setting ("—" where no run is);
* the main table, per setting: one row per model, dataset, seed ratio and run setting (repetitions pooled into
  mean ± std, never runs of different settings), its published anchor and the difference, the best epoch, the
  seconds per epoch and the peak memory;
* other runs (variants: a run folder named ``<label>_<dataset>_r<ratio>_s<seed>`` whose label is not its model, e.g.
  an investigation), each with what differs from the standard run of its cell;
* every row's Hits@1 under each test protocol (plain, CSLS, whole graph; both directions) beside the published one;
* the published figures with their sources, and every run with its own figures;
* with benchmark files (:mod:`.speed`): the speed section -- the speed targets checked against the measured figures
  (:mod:`.speed_targets`), the training-epoch and test-evaluation benchmarks and the profiles.

Plots (PNG) are written into a folder named like the page (``docs/results/``), byte for byte reproducible.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import pandas as pd

from mmea_lightning.results.collect import IDENTITY, PROBE, SETTING
from mmea_lightning.results.plots import check_curves, grid_bars
from mmea_lightning.results.published import Published, Setting, ratio_key
from mmea_lightning.results.seed_benchmarks import seed_benchmark_table
from mmea_lightning.results.settings import setting_differences
from mmea_lightning.results.speed import Benchmarks, speed_section
from mmea_lightning.results.speed_targets import SpeedTargets
from mmea_lightning.results.tables import LABELS, aggregate, differences_note, markdown_table

__all__ = ["PAGE_METRICS", "PROTOCOLS_SHOWN", "PagePlot", "grid_frame", "page_rows", "protocols_table", "render_page",
           "run_label"]

#: the metrics of the page's tables (under the chosen protocol)
PAGE_METRICS: tuple[str, ...] = ("hits@1", "hits@10", "mrr")
#: the metrics plotted over the grid
PLOT_METRICS: tuple[str, ...] = ("hits@1", "mrr")
MISSING = "—"
LABEL = "label"
STANDARD = "standard"
SETTING_LABEL = "setting_label"
#: the columns one page row is grouped by (plus the setting id: only repetitions are pooled)
ROW_KEYS: tuple[str, ...] = (LABEL, "model", "dataset", "seed_ratio", "seeds", "surface", "images", "iterative")


def run_label(run_dir: str | PurePath, model: str, dataset: str) -> str:
    """The label of a run: the prefix of its folder name ``<label>_<dataset>_r<ratio>_s<seed>``; the model's name
    when the folder is not named that way. A label other than the model marks a variant (e.g. ``mcleamc512``)."""
    match = re.fullmatch(rf"(?P<label>.+)_{re.escape(str(dataset))}_r[0-9.]+_s\d+", PurePath(run_dir).name)
    return match["label"] if match else str(model)


def _with_labels(runs: pd.DataFrame) -> pd.DataFrame:
    runs = runs.copy()
    runs[LABEL] = [run_label(d, m, s) for d, m, s in zip(runs["run_dir"], runs["model"], runs["dataset"], strict=True)]
    runs[STANDARD] = runs[LABEL] == runs["model"].astype(str)
    runs["images"] = [Setting.of_run(row).images for _, row in runs.iterrows()]
    runs[SETTING_LABEL] = [Setting.of_run(row).label for _, row in runs.iterrows()]
    return runs


def _setting(row: pd.Series) -> Setting:
    return Setting(seeds=str(row["seeds"]), names=bool(row["surface"]), images=bool(row["images"]),
                   iterative=bool(row["iterative"]))


def _known(ratio) -> bool:
    return isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and not pd.isna(ratio)


def _order(published: Published, dataset: str, ratio: float) -> int:
    pair = (dataset, ratio_key(ratio)) if _known(ratio) else None
    return published.grid.index(pair) if pair in published.grid else len(published.grid)


def page_rows(runs: pd.DataFrame, published: Published, protocol: str = "test") -> pd.DataFrame:
    """One row per label, model, dataset, seed ratio and setting (the setting id included: runs are pooled only
    when they are repetitions): ``<metric>_mean`` / ``_std`` for :data:`PAGE_METRICS`, ``n``, the mean seconds per
    epoch and peak memory, ``best_epochs`` (per run, by seed), ``runs`` (folders, by seed), ``standard``,
    ``setting_label`` and ``anchor`` (the published figure of the row's model, dataset, ratio and setting, when
    ``protocol`` is the one the published figures use). Sorted by the grid's pair order, then dataset, ratio,
    model, label and setting id."""
    runs = _with_labels(runs)
    keys = list(ROW_KEYS)
    for key in keys:  # as aggregate() groups them: a missing value is its own group "-"
        runs[key] = runs[key].astype(object).where(runs[key].notna(), "-")
    table = aggregate(runs, protocol, metrics=PAGE_METRICS, keys=keys)
    grouped = runs.sort_values(["seed", "run_dir"], kind="stable").groupby(keys + [SETTING], sort=True,
                                                                           dropna=False)
    extras = grouped.agg(best_epochs=("best_epoch", lambda e: ", ".join(
                             MISSING if pd.isna(v) else str(int(v)) for v in e)),
                         runs=("run_dir", tuple), identity=(IDENTITY, "first")).reset_index()
    table = table.merge(extras, on=keys + [SETTING], how="left", validate="one_to_one")
    table[STANDARD] = table[LABEL] == table["model"].astype(str)
    table[SETTING_LABEL] = [_setting(row).label for _, row in table.iterrows()]
    use_anchors = protocol == published.protocol
    table["anchor"] = [published.anchor(row["model"], row["dataset"], row["seed_ratio"], _setting(row))
                       if use_anchors and _known(row["seed_ratio"]) else None for _, row in table.iterrows()]
    table["order"] = [_order(published, d, r) for d, r in zip(table["dataset"], table["seed_ratio"], strict=True)]
    table["ratio_order"] = [float(r) if _known(r) else float("inf") for r in table["seed_ratio"]]
    table = table.sort_values(["order", "dataset", "ratio_order", "model", LABEL, SETTING], kind="stable")
    return table.drop(columns=["order", "ratio_order"]).reset_index(drop=True)


# --------------------------------------------------------------------------- cells


def _fraction(value: float) -> str:
    return f"{value:.3f}"


def metric_cell(mean: float, std: float, n: int) -> str:
    """``mean`` (3 decimals), with ``± std`` only when the row pools more than one run; "—" when missing."""
    if pd.isna(mean):
        return MISSING
    return _fraction(mean) if n < 2 or pd.isna(std) else f"{_fraction(mean)} ± {_fraction(std)}"


def anchor_cells(mean: float, anchor, metric: str) -> tuple[str, str]:
    """The published figure and the difference ours − published (signed, 3 decimals), "—" where either is missing."""
    published = None if anchor is None else anchor.metrics.get(metric)
    if published is None:
        return MISSING, MISSING
    return _fraction(published), (MISSING if pd.isna(mean) else f"{mean - published:+.3f}")


def _cost(value: float, digits: int) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _row_cells(row: pd.Series) -> list[str]:
    cells = [str(int(row["n"]))]
    for metric in PAGE_METRICS:
        mean = row[f"{metric}_mean"]
        cells.append(metric_cell(mean, row[f"{metric}_std"], int(row["n"])))
        cells.extend(anchor_cells(mean, row["anchor"], metric))
    cells += [row["best_epochs"], _cost(row.get("seconds_per_epoch"), 2), _cost(row.get("peak_memory_mb"), 0)]
    return cells


def _metric_header() -> list[str]:
    header = ["n"]
    for metric in PAGE_METRICS:
        label = LABELS[metric]
        header += [label, f"pub. {label}", f"Δ {label}"]
    return header + ["best epoch", "s/epoch", "peak MiB"]


def _ratio(value: float) -> str:
    return f"{float(value):g}" if _known(value) else str(value)


# --------------------------------------------------------------------------- sections


def main_tables(rows: pd.DataFrame, runs: pd.DataFrame, published: Published) -> str:
    """The standard rows, one table per setting (the grid's setting first): model, dataset, ratio, the metrics beside
    their anchors, best epoch and cost. Rows of one model, dataset and ratio with different setting ids get a
    ``setting id`` column and a note saying what differs (they are never pooled)."""
    standard = rows[rows[STANDARD]]
    if standard.empty:
        return "No standard runs."
    settings = sorted({_setting(row) for _, row in standard.iterrows()},
                      key=lambda s: (s != published.grid_setting, s))
    parts = []
    for setting in settings:
        table = standard[standard[SETTING_LABEL] == setting.label]
        cell = ["model", "dataset", "seed_ratio"]
        clashes = table.groupby(cell, dropna=False)[SETTING].nunique().gt(1).any()
        header = ["model", "dataset", "ratio"] + (["setting id"] if clashes else []) + _metric_header()
        body = [[row["model"], row["dataset"], _ratio(row["seed_ratio"])]
                + ([row[SETTING]] if clashes else []) + _row_cells(row) for _, row in table.iterrows()]
        parts.append(f"### {setting.label}\n\n{markdown_table(header, body)}")
        note = differences_note(table, cell, runs)
        if note:
            parts.append(note)
    return "\n\n".join(parts)


#: the test protocols of the protocols table (``<protocol>/hits@1`` in ``metrics.json``), as the evaluator names them
PROTOCOLS_SHOWN: tuple[str, ...] = ("test", "test_r2l", "test_csls", "test_csls_r2l", "test_all", "test_all_r2l")


def protocols_table(runs: pd.DataFrame, published: Published) -> str:
    """Hits@1 (mean ± std) of every page row under each test protocol the runs report, beside the published Hits@1:
    a published figure's protocol is often unstated (CSLS or not, which candidates), and this shows which of ours
    it sits nearest to. The rows are those of the main table and "Other runs", in the page's order."""
    shown = [p for p in PROTOCOLS_SHOWN if f"{p}/hits@1" in runs]
    if not shown:
        return "No run reports Hits@1 under any test protocol."
    per_protocol = {p: page_rows(runs, published, p) for p in shown}
    reference = published.protocol if published.protocol in shown else shown[0]
    base = per_protocol[reference]  # its rows carry the anchors
    keys = [*ROW_KEYS, SETTING]
    for p, table in per_protocol.items():  # the same groups in the same order (only the metric columns differ)
        if not table[keys].astype(str).equals(base[keys].astype(str)):
            raise AssertionError(f"the page's rows under protocol {p!r} are not those under {reference!r}")
    header = ["label", "model", "dataset", "ratio", "setting", "n", *(f"`{p}`" for p in shown),
              f"pub. {LABELS['hits@1']}"]
    body = []
    for index, row in base.iterrows():
        cells = [row[LABEL], row["model"], row["dataset"], _ratio(row["seed_ratio"]), row[SETTING_LABEL],
                 str(int(row["n"]))]
        for p in shown:
            other = per_protocol[p].loc[index]
            cells.append(metric_cell(other["hits@1_mean"], other["hits@1_std"], int(other["n"])))
        cells.append(anchor_cells(row["hits@1_mean"], row["anchor"], "hits@1")[0])
        body.append(cells)
    return (f"{LABELS['hits@1']} of the tested checkpoint under each test protocol (`test`: the links' KG2 entities "
            "as candidates, left to right; `_r2l`: right to left; `csls`: CSLS re-scoring with k = the run's "
            "`csls_k`; `all`: every entity of the other graph as a candidate). `pub.`: the published figure of the "
            "row's model, dataset, ratio and setting, as published (`" + published.protocol + "` is the protocol "
            "the published figures are compared under in the tables above).\n\n" + markdown_table(header, body))


def grid_table(rows: pd.DataFrame, published: Published) -> str:
    """Hits@1 (mean ± std) of every model with a standard run on a pair of the grid, in the grid's setting, one
    column per pair, "—" for a missing cell; below them, published figures of systems without a run here. A cell
    with runs of more than one setting lists each (``a / b``) and is marked ``*``."""
    pairs = published.grid
    ours = grid_frame(rows, published, "hits@1")
    models = sorted(set(ours["model"]))
    lines = []
    for model in models:
        cells = [model]
        for dataset, ratio in pairs:
            cell = ours[(ours["model"] == model) & (ours["dataset"] == dataset) & (ours["seed_ratio"] == ratio)]
            values = [metric_cell(r["mean"], r["std"], int(r["n"])) for _, r in cell.iterrows()]
            cells.append(" / ".join(values) + (" *" if len(values) > 1 else "") if values else MISSING)
        lines.append(cells)
    others = sorted({a.model for a in published.anchors
                     if a.setting == published.grid_setting and (a.dataset, ratio_key(a.seed_ratio)) in pairs
                     and a.model not in models and "hits@1" in a.metrics})
    for model in others:
        cells = [f"{model} (published)"]
        for dataset, ratio in pairs:
            anchor = published.anchor(model, dataset, ratio, published.grid_setting)
            cells.append(_fraction(anchor.metrics["hits@1"]) if anchor and "hits@1" in anchor.metrics else MISSING)
        lines.append(cells)
    header = ["model"] + [f"{dataset} {_ratio(ratio)}" for dataset, ratio in pairs]
    text = markdown_table(header, lines) if lines else "No run or published figure on the grid's pairs."
    if any(" *" in cell for row in lines for cell in row):
        text += "\n\n\\* runs of more than one setting (never pooled): see the main table's notes."
    return text


def grid_frame(rows: pd.DataFrame, published: Published, metric: str) -> pd.DataFrame:
    """The standard rows on the grid's pairs in the grid's setting: ``model``, ``dataset``, ``seed_ratio``, ``mean``,
    ``std``, ``n``, ``anchor`` (the published figure of ``metric`` or NaN), ``series`` (the model, with the setting
    id when the model has rows of several settings on one pair), in the page's row order."""
    columns = ["model", "dataset", "seed_ratio", "mean", "std", "n", "anchor", "series"]
    records = []
    for _, row in rows[rows[STANDARD]].iterrows():
        if not _known(row["seed_ratio"]) or (row["dataset"], ratio_key(row["seed_ratio"])) not in published.grid:
            continue
        if _setting(row) != published.grid_setting:
            continue
        anchor = row["anchor"].metrics.get(metric) if row["anchor"] is not None else None
        records.append({"model": row["model"], "dataset": row["dataset"], "seed_ratio": ratio_key(row["seed_ratio"]),
                        "mean": row[f"{metric}_mean"], "std": row[f"{metric}_std"], "n": int(row["n"]),
                        "anchor": float("nan") if anchor is None else anchor, SETTING: row[SETTING]})
    frame = pd.DataFrame(records, columns=[*columns[:-1], SETTING])
    clash = frame.groupby(["model", "dataset", "seed_ratio"])[SETTING].transform("nunique").gt(1)
    clashing = set(frame.loc[clash, "model"])
    frame["series"] = [f"{m} [{s}]" if m in clashing else m for m, s in zip(frame["model"], frame[SETTING],
                                                                           strict=True)]
    return frame


def other_runs(rows: pd.DataFrame) -> str:
    """The variants: label, model, dataset, ratio, setting and the metrics beside the anchors, then for each what
    differs from the standard run(s) of its model, dataset, ratio and setting."""
    others = rows[~rows[STANDARD]]
    if others.empty:
        return "None."
    header = ["label", "model", "dataset", "ratio", "setting"] + _metric_header()
    body = [[row[LABEL], row["model"], row["dataset"], _ratio(row["seed_ratio"]), row[SETTING_LABEL]]
            + _row_cells(row) for _, row in others.iterrows()]
    notes = []
    standard = rows[rows[STANDARD]]
    for _, row in others.iterrows():
        same = standard[(standard["model"] == row["model"]) & (standard["dataset"] == row["dataset"])
                        & (standard["seed_ratio"] == row["seed_ratio"])
                        & (standard[SETTING_LABEL] == row[SETTING_LABEL])]
        where = f"`{row[LABEL]}` ({row['model']}, {row['dataset']} {_ratio(row['seed_ratio'])}, setting {row[SETTING]})"
        if same.empty:
            notes.append(f"- {where}: no standard run of this model, dataset, ratio and setting to compare with.")
        for _, base in same.iterrows():
            known = isinstance(base["identity"], dict) and isinstance(row["identity"], dict)
            differing = setting_differences([base["identity"], row["identity"]]) if known else []
            what = "; ".join(differing) if differing else "settings unknown (no config.yaml / run_identity.json)"
            notes.append(f"- {where} differs from the standard run (setting {base[SETTING]}; values: standard, "
                         f"this) in: {what}")
    return markdown_table(header, body) + "\n\n" + "\n".join(notes)


def published_table(published: Published) -> str:
    """Every published figure (file order) with its setting and source, then the sources."""
    metrics = ("hits@1", "hits@5", "hits@10", "mrr")
    header = ["model", "dataset", "ratio", "setting", *(LABELS[m] for m in metrics), "source", "line"]
    body = [[a.model, a.dataset, _ratio(a.seed_ratio), a.setting.label,
             *(_fraction(a.metrics[m]) if m in a.metrics else MISSING for m in metrics), a.source.key, a.line]
            for a in published.anchors]
    used = list(dict.fromkeys(a.source for a in published.anchors))
    sources = "\n".join(f"- `{s.key}`: {s.title}. Where: {s.where}." for s in used)
    return markdown_table(header, body) + "\n\nSources:\n\n" + sources


def runs_table(runs: pd.DataFrame, protocol: str) -> str:
    """Every run on its own, by folder: seeds, modalities, its metrics, best epoch, epochs, cost, setting id."""
    header = ["run", "model", "dataset", "ratio", "seed", "split seed", "modalities",
              *(LABELS[m] for m in PAGE_METRICS), "val MRR (best)", "best epoch", "epochs", "s/epoch", "peak MiB",
              "setting id"]
    body = []
    for _, run in runs.sort_values("run_dir", kind="stable").iterrows():
        folder = PurePath(run["run_dir"]).as_posix()
        body.append([f"`{folder}`", run["model"], run["dataset"], _ratio(run["seed_ratio"]),
                     _cost(run["seed"], 0), _cost(run["split_seed"], 0), str(run["modalities"]).replace(",", "+"),
                     *(metric_cell(run.get(f"{protocol}/{m}"), 0.0, 1) for m in PAGE_METRICS),
                     metric_cell(run.get("val/best_mrr"), 0.0, 1), _cost(run.get("best_epoch"), 0),
                     _cost(run.get("epochs_run"), 0), _cost(run.get("seconds_per_epoch"), 2),
                     _cost(run.get("peak_memory_mb"), 0), run[SETTING]])
    return markdown_table(header, body)


# --------------------------------------------------------------------------- the page


@dataclass(frozen=True)
class PagePlot:
    """A plot of the page: the file name (in the page's plot folder), its caption, the section it belongs to
    (``grid`` or ``checks``), the data behind it and ``draw(path)``, which writes the PNG."""

    name: str
    caption: str
    section: str
    data: pd.DataFrame
    draw: Callable[[Path], Path]


def _curve_name(run_dir: str) -> str:
    return "checks_" + re.sub(r"[^A-Za-z0-9.-]+", "_", PurePath(run_dir).as_posix()).strip("_") + ".png"


def page_plots(rows: pd.DataFrame, runs: pd.DataFrame, published: Published, protocol: str) -> list[PagePlot]:
    """One bar plot per :data:`PLOT_METRICS` over the grid (when any standard run is on it), then one plot of the
    validation checks per run that recorded them (``run.test_probe``), by folder."""
    plots = []
    for metric in PLOT_METRICS:
        data = grid_frame(rows, published, metric)
        if data.empty:
            continue
        label = f"{LABELS[metric]} ({protocol})"
        caption = (f"{label} per model and pair, {published.grid_setting.label}; error bars: std over repeated runs; "
                   "markers: published figures")

        def draw(path: Path, data=data, label=label) -> Path:
            return grid_bars(data, published.grid, label, f"{label}, {published.grid_setting.label}", path)

        plots.append(PagePlot(f"grid_{re.sub(r'[^a-z0-9]', '', metric)}.png", caption, "grid", data, draw))
    for _, run in _probed(runs).iterrows():
        checks = pd.DataFrame(run[PROBE]["checks"])
        tested = None if pd.isna(run.get("best_epoch")) else int(run["best_epoch"])
        folder = PurePath(run["run_dir"]).as_posix()
        caption = f"validation MRR and the probe's test MRR per check, {folder}"

        def draw(path: Path, checks=checks, tested=tested, folder=folder) -> Path:
            return check_curves(checks, tested, folder, path)

        plots.append(PagePlot(_curve_name(run["run_dir"]), caption, "checks", checks, draw))
    return plots


def _probed(runs: pd.DataFrame) -> pd.DataFrame:
    if PROBE not in runs:
        return runs.iloc[0:0]
    return runs[runs[PROBE].notna()].sort_values("run_dir", kind="stable")


def checks_table(runs: pd.DataFrame) -> str:
    """Per run with a test probe: its protocol, number of checks, the validation-selected check (the tested one)
    and the test-selected check with their Hits@1 and MRR, and the gain a test-based selection would show."""
    probed = _probed(runs)
    if probed.empty:
        return ("No run holds a record of its validation checks (`metrics.json` keeps the best validation MRR only); "
                "a run trained with `callbacks=with_test_probe` keeps every check under `run.test_probe`.")
    header = ["run", "protocol", "checks", "val-selected epoch", "H@1", "MRR", "test-selected epoch", "H@1", "MRR",
              "gain H@1", "gain MRR"]
    body = []
    for _, run in probed.iterrows():
        probe = run[PROBE]
        val, test, gain = (probe.get(k) or {} for k in ("validation_selected", "test_selected", "test_selection_gain"))

        def cell(record: dict, key: str, signed: bool = False) -> str:
            value = record.get(key)
            if value is None or pd.isna(value):
                return MISSING
            return f"{value:+.3f}" if signed else (str(int(value)) if key == "epoch" else _fraction(value))

        body.append([f"`{PurePath(run['run_dir']).as_posix()}`", probe.get("protocol", MISSING),
                     len(probe["checks"]), cell(val, "epoch"), cell(val, "hits@1"), cell(val, "mrr"),
                     cell(test, "epoch"), cell(test, "hits@1"), cell(test, "mrr"), cell(gain, "hits@1", True),
                     cell(gain, "mrr", True)])
    return ("Runs trained with `callbacks=with_test_probe` ranked the test links at every validation check "
            "(`run.test_probe`). The tested checkpoint is always the validation-selected one; the test-selected "
            "check only measures what selecting on test links, as some published code bases do, would add. It is "
            "never a result.\n\n" + markdown_table(header, body))


def command_line(roots: Sequence[str | Path], published: str | Path, page: str | Path, protocol: str,
                 seed_folder: str | Path | None = None, benchmark_folder: str | Path | None = None,
                 speed_targets: str | Path | None = None) -> str:
    """The command that regenerates the page, as it was run."""
    args = [*(str(r) for r in roots), "--published", str(published), "--markdown", str(page)]
    if seed_folder is not None:
        args += ["--seed-quality", str(seed_folder)]
    if benchmark_folder is not None:
        args += ["--benchmarks", str(benchmark_folder)]
    if speed_targets is not None:
        args += ["--speed-targets", str(speed_targets)]
    if protocol != "test":
        args += ["--protocol", protocol]
    return "python -m mmea_lightning.report " + " ".join(shlex.quote(a) for a in args)


def seed_quality_section(rows: Sequence[dict], folder: str | Path) -> str:
    """The pseudo-seed quality table (rows of :func:`~mmea_lightning.results.seed_benchmarks.load_seed_benchmarks`)."""
    header = ["dataset", "generator", "surface", "stage", "seeds", "precision", "correct", "coverage", "seconds",
              "similarity from (weights)"]
    return (f"Measured by `benchmarks/bench_seeds.py --json` (files in `{PurePath(folder).as_posix()}`, commands in "
            "`results/README.md`). Precision: the share of seeds that are gold links (the gold links are read only "
            "to score the seeds, never to make them); coverage: the graph coverage of PSQE's Eq. 11; seconds: wall "
            "time of the stage on the machine `results/README.md` describes. Every stage includes the previous "
            "ones' seeds. Similarity from: the raw features (and their weights) PSQE's Stage I and rechecks and the "
            "pivots compare; Stage II adds its trained model.\n\n" + markdown_table(header, seed_benchmark_table(rows)))


def render_page(runs: pd.DataFrame, published: Published, *, command: str, roots: Sequence[str | Path],
                plot_folder: str, plots: Sequence[PagePlot], protocol: str = "test",
                seed_rows: Sequence[dict] | None = None, seed_folder: str | Path | None = None,
                benchmarks: Benchmarks | None = None, speed_targets: SpeedTargets | None = None) -> str:
    """The Markdown of the page (see the module doc); ``plots`` are linked from ``plot_folder`` (relative to the
    page)."""
    rows = page_rows(runs, published, protocol)
    where = ", ".join(f"`{PurePath(r).as_posix()}`" for r in roots)
    anchors_note = ("" if protocol == published.protocol else
                    f"\n\n**The published figures use protocol `{published.protocol}`, not `{protocol}`: no anchor is "
                    "set beside these rows.**")
    def figures(section: str) -> list[str]:
        return [f"![{p.caption}]({plot_folder}/{p.name})" for p in plots if p.section == section]

    parts = [
        f"<!-- Generated by `{command}`. Do not edit: tests/test_results_page.py checks that this page equals a "
        "fresh regeneration. -->",
        "# Results",
        f"Generated from the {len(runs)} run summaries under {where} (`metrics.json`, `config.yaml`, "
        f"`run_identity.json` of each run) and the published figures in `{PurePath(published.path).as_posix()}`, by\n\n"
        f"    {command}\n\n"
        "Do not edit this page by hand: add or change a run or a published figure and run the command again. The "
        "commands behind the runs are in `results/README.md`.",
        "How to read it:\n\n"
        f"- Metrics: protocol `{protocol}`"
        + (" (each test link's KG1 entity ranked against the test links' KG2 entities by cosine similarity, "
           "tie-aware ranks, left to right)" if protocol == "test" else "")
        + ", of the checkpoint each run was tested with.\n"
        "- `mean ± std`: over the `n` runs of one setting (sample std; a single run shows its value). Runs are pooled "
        "only when everything but `seed` / `split_seed` agrees (config and data files, `run_identity.json`).\n"
        "- `pub.`: the published figure of the same model, dataset, seed ratio and setting "
        f"(`{PurePath(published.path).as_posix()}`); `Δ` = ours − published.\n"
        "- `best epoch`: the 0-based epoch of the best-validation checkpoint each run was tested with (per run, by "
        "seed). `s/epoch` and `peak MiB`: means of `run.perf.seconds_per_epoch` and `run.perf.peak_memory_mb`; "
        "`results/README.md` says how loaded the machine was.\n"
        "- A run folder is named `<model>_<dataset>_r<ratio>_s<seed>`; a folder whose first part is not its model "
        "(e.g. an investigation) is a variant, listed under \"Other runs\", never pooled with the standard runs."
        + anchors_note,
        f"## Grid: {LABELS['hits@1']}, {published.grid_setting.label}",
        grid_table(rows, published),
    ]
    parts += figures("grid")
    parts += ["## Main table", main_tables(rows, runs, published),
              "## Other runs", other_runs(rows),
              "## Every test protocol", protocols_table(runs, published),
              "## Published figures without images", published_table(published),
              "## Every run", runs_table(runs, protocol),
              "## Validation checks", checks_table(runs), *figures("checks")]
    if seed_rows is not None:
        parts += ["## Pseudo-seed quality", seed_quality_section(seed_rows, seed_folder or "")]
    if benchmarks is not None:
        parts += ["## Speed", speed_section(benchmarks, speed_targets)]
    return "\n\n".join(parts) + "\n"
