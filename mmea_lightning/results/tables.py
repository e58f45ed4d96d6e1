"""The papers' tables from collected runs: mean +- std over repeated seeds, Markdown and CSV."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

TABLE_METRICS: tuple[str, ...] = ("hits@1", "hits@5", "hits@10", "mrr")
#: what identifies a setting; runs differing only in ``seed`` / ``split_seed`` are repetitions of one setting
SETTING_KEYS: tuple[str, ...] = ("dataset", "seed_ratio", "model", "seeds", "surface", "iterative")
OPTIONAL_KEYS: tuple[str, ...] = ("ablation", "theta", "alpha", "clusters")
LABELS = {"hits@1": "H@1", "hits@5": "H@5", "hits@10": "H@10", "mrr": "MRR", "seed_ratio": "ratio",
          "seconds_per_epoch": "s/epoch", "peak_memory_mb": "peak MiB"}


def setting_keys(runs: pd.DataFrame) -> list[str]:
    """The identity columns plus every optional hyper-parameter column that some run sets."""
    keys = [key for key in SETTING_KEYS if key in runs]
    return keys + [key for key in OPTIONAL_KEYS if key in runs and runs[key].notna().any()]


def aggregate(runs: pd.DataFrame, protocol: str = "test", metrics: Sequence[str] = TABLE_METRICS,
              keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per setting: ``<metric>_mean``, ``<metric>_std`` (sample std, 0 for one run), ``n`` and the mean
    cost (seconds per epoch, peak memory).

    Args:
        runs: :func:`~mmea_lightning.results.collect.collect` output.
        protocol: evaluator protocol prefix (``test``, ``test_csls``, ``test_all``, ...).
        metrics: metric names under the protocol.
        keys: grouping columns (default :func:`setting_keys`).
    """
    keys = list(keys) if keys is not None else setting_keys(runs)
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


def _cell(mean: float, std: float, n: int) -> str:
    return f"{mean:.4f}" if n < 2 else f"{mean:.4f} ± {std:.4f}"


def to_markdown(table: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Markdown: the setting columns, ``mean ± std`` per metric (``mean`` alone for a single run), ``n``, cost."""
    header = [LABELS.get(k, k) for k in keys] + [LABELS.get(m, m) for m in metrics] + ["n"]
    costs = [c for c in ("seconds_per_epoch", "peak_memory_mb") if c in table]
    header += [LABELS[c] for c in costs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in keys]
        cells += [_cell(row[f"{m}_mean"], row[f"{m}_std"], int(row["n"])) for m in metrics]
        cells.append(str(int(row["n"])))
        cells += [f"{row['seconds_per_epoch']:.2f}" if "seconds_per_epoch" == c else f"{row[c]:.0f}" for c in costs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_table(runs: pd.DataFrame, protocol: str = "test") -> tuple[pd.DataFrame, str]:
    """Method x dataset x seed ratio (and any swept hyper-parameter) with Hits@1/5/10 and MRR."""
    keys = setting_keys(runs)
    table = aggregate(runs, protocol, keys=keys)
    order = [k for k in ("dataset", "seed_ratio", "seeds", "surface", "iterative") if k in keys]
    order += [k for k in keys if k not in order]
    table = table.sort_values(order, kind="stable")[order + [c for c in table.columns if c not in order]]
    return table, to_markdown(table, order)


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
    table = aggregate(subset, protocol, metrics=("hits@1", "mrr"),
                      keys=["model", "ablation", "dataset", "seed_ratio"])
    wide = table.pivot_table(index=["model", "ablation"], columns=["dataset", "seed_ratio"],
                             values=["hits@1_mean", "mrr_mean"])
    settings = sorted({(d, r) for _, d, r in wide.columns})
    header = ["model", "variant"] + [f"{d} {r} {label}" for d, r in settings for label in ("H@1", "MRR")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    variants = sorted(wide.index, key=lambda idx: (idx[0], idx[1] != "full", idx[1]))
    for idx in variants:
        row = wide.loc[idx]
        cells = [str(idx[0]), str(idx[1])]
        for d, r in settings:
            for metric in ("hits@1_mean", "mrr_mean"):
                value = row.get((metric, d, r))
                cells.append("-" if value is None or pd.isna(value) else f"{value:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return table, "\n".join(lines)


def seed_quality_table(quality: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    """Per dataset, seed generator and stage: seed count, precision, coverage (mean over runs)."""
    if quality.empty:
        return None
    values = [c for c in ("count", "precision", "coverage", "seconds") if c in quality]
    table = quality.groupby(["dataset", "seeds", "stage"], sort=False)[values].mean().reset_index()
    header = ["dataset", "seeds", "stage", *values]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row["dataset"]), str(row["seeds"]), str(row["stage"])]
        cells += [f"{row[v]:.0f}" if v == "count" else (f"{row[v]:.1f}" if v == "seconds" else f"{row[v]:.4f}")
                  for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    return table, "\n".join(lines)
