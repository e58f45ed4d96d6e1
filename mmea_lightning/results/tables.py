"""The papers' tables from collected runs: mean +- std over repeated seeds, Markdown and CSV.

Only repetitions are pooled: runs whose settings and data agree except for ``seed`` / ``split_seed`` (one
``setting`` id, :mod:`.settings`). Rows that look alike in the table's columns but are different experiments (other
data, modalities, epochs, ...) stay apart, get a ``setting`` column and a note listing what differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mmea_lightning.results.collect import IDENTITY, SETTING
from mmea_lightning.results.settings import ablation_keys, setting_differences, setting_id

TABLE_METRICS: tuple[str, ...] = ("hits@1", "hits@5", "hits@10", "mrr")
#: the columns that describe a setting in the tables (the ``setting`` id decides what is pooled)
SETTING_KEYS: tuple[str, ...] = ("dataset", "seed_ratio", "model", "seeds", "surface", "iterative")
OPTIONAL_KEYS: tuple[str, ...] = ("ablation", "theta", "alpha", "clusters")
LABELS = {"hits@1": "H@1", "hits@5": "H@5", "hits@10": "H@10", "mrr": "MRR", "seed_ratio": "ratio",
          "seconds_per_epoch": "s/epoch", "peak_memory_mb": "peak MiB"}


def setting_keys(runs: pd.DataFrame) -> list[str]:
    """The identity columns plus every optional hyper-parameter column that some run sets."""
    keys = [key for key in SETTING_KEYS if key in runs]
    return keys + [key for key in OPTIONAL_KEYS if key in runs and runs[key].notna().any()]


def aggregate(runs: pd.DataFrame, protocol: str = "test", metrics: Sequence[str] = TABLE_METRICS,
              keys: Sequence[str] | None = None, by_setting: bool = True) -> pd.DataFrame:
    """One row per setting: ``<metric>_mean``, ``<metric>_std`` (sample std, 0 for one run), ``n`` and the mean
    cost (seconds per epoch, peak memory).

    Args:
        runs: :func:`~mmea_lightning.results.collect.collect` output.
        protocol: evaluator protocol prefix (``test``, ``test_csls``, ``test_all``, ...).
        metrics: metric names under the protocol.
        keys: the columns shown (default :func:`setting_keys`).
        by_setting: group by the ``setting`` id too (when ``runs`` has it), so that only repetitions are pooled;
            ``False`` only when ``keys`` already hold an id that says which runs are comparable.
    """
    keys = list(keys) if keys is not None else setting_keys(runs)
    if by_setting and SETTING in runs and SETTING not in keys:
        keys.append(SETTING)
    columns = [f"{protocol}/{metric}" for metric in metrics]
    missing = [c for c in columns if c not in runs]
    if missing:
        raise KeyError(f"no run reports {missing}; protocols present: "
                       f"{sorted({c.split('/')[0] for c in runs.columns if '/' in c})}")
    frame = runs.copy()
    for key in keys:  # pandas drops NaN group keys; keep "not set" as its own group
        frame[key] = frame[key].astype(object).where(frame[key].notna(), "-")
    grouped = frame.groupby(keys, sort=True, dropna=False)
    table = grouped[columns].mean().add_suffix("_mean")
    std = grouped[columns].std(ddof=1).fillna(0.0).add_suffix("_std")
    table = table.join(std)
    table.columns = [c.replace(f"{protocol}/", "") for c in table.columns]
    table["n"] = grouped.size()
    for cost in ("seconds_per_epoch", "peak_memory_mb"):
        if cost in frame:
            table[cost] = grouped[cost].mean()
    return table.reset_index()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table: ``header`` and one line per row (cells through ``str``; ``|`` inside a cell escaped)."""
    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])


def _cell(mean: float, std: float, n: int) -> str:
    return f"{mean:.4f}" if n < 2 else f"{mean:.4f} ± {std:.4f}"


def to_markdown(table: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Markdown: the setting columns, ``mean ± std`` per metric (``mean`` alone for a single run), ``n``, cost."""
    header = [LABELS.get(k, k) for k in keys] + [LABELS.get(m, m) for m in metrics] + ["n"]
    costs = [c for c in ("seconds_per_epoch", "peak_memory_mb") if c in table]
    header += [LABELS[c] for c in costs]
    rows = []
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in keys]
        cells += [_cell(row[f"{m}_mean"], row[f"{m}_std"], int(row["n"])) for m in metrics]
        cells.append(str(int(row["n"])))
        cells += [f"{row['seconds_per_epoch']:.2f}" if "seconds_per_epoch" == c else f"{row[c]:.0f}" for c in costs]
        rows.append(cells)
    return markdown_table(header, rows)


def main_table(runs: pd.DataFrame, protocol: str = "test") -> tuple[pd.DataFrame, str]:
    """Method x dataset x seed ratio (and any swept hyper-parameter) with Hits@1/5/10 and MRR.

    One row per setting (repetitions pooled). When two rows agree in every shown column, the Markdown gets a
    ``setting`` column and a note naming what differs between them (:func:`differences_note`).
    """
    keys = setting_keys(runs)
    table = aggregate(runs, protocol, keys=keys)
    order = [k for k in ("dataset", "seed_ratio", "seeds", "surface", "iterative") if k in keys]
    order += [k for k in keys if k not in order]
    ids = [SETTING] if SETTING in table else []
    table = table.sort_values(order + ids, kind="stable")[order + ids + [c for c in table.columns
                                                                          if c not in order + ids]]
    note = differences_note(table, order, runs)
    markdown = to_markdown(table, order + ids if note else order)
    return table, markdown + (f"\n\n{note}" if note else "")


def _identities(runs: pd.DataFrame, id_column: str = SETTING, ignore: Sequence[str] = ()) -> dict[str, dict]:
    """``{setting id: setting}`` of the runs (the first run of each id; ``ignore`` keys left out of the ids)."""
    if IDENTITY not in runs or id_column not in runs:
        return {}
    out: dict[str, dict] = {}
    for key, identity in zip(runs[id_column], runs[IDENTITY], strict=True):
        if key not in out:
            out[key] = {**identity, "settings": {k: v for k, v in identity["settings"].items()
                                                 if not any(k == p or k.startswith(p + ".") for p in ignore)}}
    return out


_NOT_POOLED = ("Not pooled: rows that agree in the columns above are different experiments (runs are averaged only "
               "when everything but seed / split_seed agrees):")


def differences_note(table: pd.DataFrame, keys: Sequence[str], runs: pd.DataFrame, id_column: str = SETTING,
                     ignore: Sequence[str] = (), intro: str = _NOT_POOLED) -> str:
    """A Markdown note for the rows of ``table`` that agree in ``keys`` but not in ``id_column``: which settings
    (with their number of runs ``n`` when ``table`` has it) and what differs between them (``ignore`` keys left
    out); empty when every row is told apart by ``keys``."""
    if id_column not in table:
        return ""
    identities = _identities(runs, id_column, ignore)
    lines = []
    for values, rows in table.groupby(list(keys), sort=False, dropna=False):
        if rows[id_column].nunique() < 2:
            continue
        values = values if isinstance(values, tuple) else (values,)
        shown = ", ".join(str(row[id_column]) + (f" (n={int(row['n'])})" if "n" in row else "")
                          for _, row in rows.iterrows())
        differing = setting_differences([identities[i] for i in rows[id_column] if i in identities])
        what = "; ".join(differing) if differing else "settings unknown (no config.yaml / run_identity.json)"
        lines.append(f"- {' / '.join(str(v) for v in values)}: {id_column} {shown} differ in: {what}")
    if not lines:
        return ""
    return intro + "\n" + "\n".join(lines)


def ablation_table(runs: pd.DataFrame, protocol: str = "test") -> tuple[pd.DataFrame, str] | None:
    """Rows: the full model and each ablation variant; columns: Hits@1 and MRR per dataset (and ratio).

    Only models that have ablation runs take part; their runs without an ablation are the ``full`` row.
    """
    if "ablation" not in runs or runs["ablation"].isna().all():
        return None
    models = runs.loc[runs["ablation"].notna() & (runs["ablation"] != "none"), "model"].unique()
    subset = runs[runs["model"].isin(models)].copy()
    subset["ablation"] = subset["ablation"].fillna("full").replace({"none": "full"})
    if "ablation_effective" in subset:  # e.g. an image ablation on data without images: the full model again
        ineffective = subset["ablation_effective"].eq(False)
        subset.loc[ineffective, "ablation"] = subset.loc[ineffective, "ablation"] + " (= full on this data)"
    ignore: list[str] = []
    if IDENTITY in subset:  # the full model and its variants must agree in everything but the ablation
        ignore = ablation_keys(subset[IDENTITY])
        subset["base"] = [setting_id(identity, ignore) for identity in subset[IDENTITY]]
        subset = subset[subset["base"].isin(set(subset.loc[subset["ablation"] != "full", "base"]))]
    else:
        subset["base"] = "-"
    table = aggregate(subset, protocol, metrics=("hits@1", "mrr"),
                      keys=["model", "ablation", "dataset", "seed_ratio", "base"], by_setting=False)
    wide = table.pivot_table(index=["model", "ablation"], columns=["dataset", "seed_ratio", "base"],
                             values=["hits@1_mean", "mrr_mean"])
    settings = sorted({(d, r, b) for _, d, r, b in wide.columns})
    several = {(d, r) for d, r, _ in settings if sum((d2, r2) == (d, r) for d2, r2, _ in settings) > 1}
    header = ["model", "variant"] + [f"{d} {r}{f' [{b}]' if (d, r) in several else ''} {label}"
                                     for d, r, b in settings for label in ("H@1", "MRR")]
    rows = []
    variants = sorted(wide.index, key=lambda idx: (idx[0], idx[1] != "full", idx[1]))
    for idx in variants:
        row = wide.loc[idx]
        cells = [str(idx[0]), str(idx[1])]
        for d, r, b in settings:
            for metric in ("hits@1_mean", "mrr_mean"):
                value = row.get((metric, d, r, b))
                cells.append("-" if value is None or pd.isna(value) else f"{value:.4f}")
        rows.append(cells)
    columns = table.drop_duplicates(["model", "dataset", "seed_ratio", "base"])[["model", "dataset", "seed_ratio",
                                                                                 "base"]]
    note = differences_note(columns, ["model", "dataset", "seed_ratio"], subset, id_column="base", ignore=ignore,
                            intro="Columns of one dataset and ratio with different [settings] are different "
                            "experiments (the full model and its variants agree in everything but the ablation):")
    return table, markdown_table(header, rows) + (f"\n\n{note}" if note else "")


def seed_quality_table(quality: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    """Per dataset, seed generator and stage: seed count, precision, coverage (mean over runs)."""
    if quality.empty:
        return None
    values = [c for c in ("count", "precision", "coverage", "seconds") if c in quality]
    table = quality.groupby(["dataset", "seeds", "stage"], sort=False)[values].mean().reset_index()
    header = ["dataset", "seeds", "stage", *values]
    rows = []
    for _, row in table.iterrows():
        cells = [str(row["dataset"]), str(row["seeds"]), str(row["stage"])]
        cells += [f"{row[v]:.0f}" if v == "count" else (f"{row[v]:.1f}" if v == "seconds" else f"{row[v]:.4f}")
                  for v in values]
        rows.append(cells)
    return table, markdown_table(header, rows)
