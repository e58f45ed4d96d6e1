"""Plots as PNG files: metrics against a hyper-parameter (θ, α, seed ratio, cluster count), and the results page's
bars per model and pair with the published figures as markers (byte for byte reproducible)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mmea_lightning.atomic_files import write_bytes_atomic  # noqa: E402

from .collect import CONFIG_AXES, IDENTITY, SETTING  # noqa: E402
from .settings import setting_id  # noqa: E402
from .tables import aggregate, setting_keys  # noqa: E402

PLOT_AXES: dict[str, str] = {"theta": "reward threshold θ", "alpha": "MI weight α", "seed_ratio": "seed ratio",
                             "clusters": "PSQE cluster count"}
#: the config keys of each axis (and the data module's copies): a line joins settings that differ only in them
AXIS_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    axis: tuple(key for base in CONFIG_AXES.get(axis, (axis,)) for key in (base, f"data.{base}")) for axis in PLOT_AXES}


def plot_axes(runs: pd.DataFrame, out_dir: Path, protocol: str = "test") -> list[Path]:
    """One PNG per swept axis (an axis with at least two values among comparable runs): Hits@1 and MRR (mean, with
    the std over repetitions as error bars) against the axis, one line per other setting (runs whose settings differ
    in more than the axis and the seeds are never on one line)."""
    written = []
    keys = setting_keys(runs)
    for axis, label in PLOT_AXES.items():
        if axis not in runs or runs[axis].dropna().nunique() < 2:
            continue
        subset = runs[runs[axis].notna()]
        table = aggregate(subset, protocol, metrics=("hits@1", "mrr"), keys=keys)
        line_keys = [k for k in keys if k != axis and table[k].nunique() > 1] or ["model"]
        if IDENTITY in subset:  # the setting without the axis: points of one line differ only in the axis
            line_of = {sid: setting_id(identity, AXIS_CONFIG_KEYS[axis])
                       for sid, identity in zip(subset[SETTING], subset[IDENTITY], strict=True)}
            table["line"] = table[SETTING].map(line_of)
            if (table.groupby(line_keys, dropna=False)["line"].nunique() > 1).any():
                line_keys = [*line_keys, "line"]
        fig, panels = plt.subplots(1, 2, figsize=(10, 4))
        for panel, metric, title in zip(panels, ("hits@1", "mrr"), ("Hits@1", "MRR")):
            for name, line in table.groupby(line_keys, sort=True):
                line = line.sort_values(axis)
                name = name if isinstance(name, tuple) else (name,)
                panel.errorbar(line[axis].astype(float), line[f"{metric}_mean"], yerr=line[f"{metric}_std"],
                               marker="o", capsize=3, label=" / ".join(str(v) for v in name))
            panel.set_xlabel(label)
            panel.set_ylabel(f"{title} ({protocol})")
            panel.grid(alpha=0.3)
        panels[0].legend(fontsize=8)
        fig.suptitle(f"Hits@1 and MRR vs {label}")
        fig.tight_layout()
        path = out_dir / f"metrics_vs_{axis}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


#: PNGs that are the same bytes on every run: fixed size and resolution, no software / time stamp in the metadata
PNG_DPI = 100
PNG_METADATA = {"Software": None}


def png_bytes(fig) -> bytes:
    """``fig`` as PNG bytes without metadata that changes between runs (closes ``fig``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI, metadata=PNG_METADATA)
    plt.close(fig)
    return buffer.getvalue()


def grid_bars(data: pd.DataFrame, pairs: Sequence[tuple[str, float]], ylabel: str, title: str, path: Path) -> Path:
    """Grouped bars: one group per pair of ``pairs`` (``(dataset, seed_ratio)``), one bar per ``series`` (sorted),
    height ``mean`` with ``std`` as error bar when ``n > 1``, and the published figure (``anchor``, NaN for none) as
    a black marker on its bar. ``data``: :func:`~mmea_lightning.results.page.grid_frame` output."""
    series = sorted(set(data["series"]))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(9, 4))
    anchored = False
    for i, name in enumerate(series):
        rows = data[data["series"] == name]
        x = [pairs.index((d, r)) - 0.4 + width * (i + 0.5) for d, r in zip(rows["dataset"], rows["seed_ratio"],
                                                                            strict=True)]
        ax.bar(x, rows["mean"], width=width, label=name, color=f"C{i % 10}")
        pooled = (rows["n"] > 1).to_numpy()
        if pooled.any():
            ax.errorbar([v for v, p in zip(x, pooled, strict=True) if p], rows.loc[pooled, "mean"],
                        yerr=rows.loc[pooled, "std"], fmt="none", ecolor="black", capsize=3)
        marked = rows["anchor"].notna().to_numpy()
        if marked.any():
            ax.scatter([v for v, m in zip(x, marked, strict=True) if m], rows.loc[marked, "anchor"], marker="D",
                       color="black", zorder=3, label=None if anchored else "published (no images)")
            anchored = True
    ax.set_xticks(range(len(pairs)), [f"{d}\n{r:g}" for d, r in pairs])
    ax.set_xlim(-0.5, len(pairs) - 0.5)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    write_bytes_atomic(path, png_bytes(fig))
    return path


def check_curves(checks: pd.DataFrame, tested_epoch: int | None, title: str, path: Path) -> Path:
    """Validation MRR per validation check (``epoch``, ``val_mrr``), the probe's test MRR (``mrr``, dashed: a
    diagnostic, never used for selection) and the tested epoch as a dotted line."""
    checks = checks.sort_values("epoch", kind="stable")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(checks["epoch"], checks["val_mrr"], marker="o", markersize=3, label="validation MRR (selects)")
    ax.plot(checks["epoch"], checks["mrr"], linestyle="--", marker="o", markersize=3,
            label="test MRR (probe, diagnostic only)")
    if tested_epoch is not None:
        ax.axvline(tested_epoch, color="black", linestyle=":", label=f"tested checkpoint (epoch {tested_epoch})")
    ax.set_xlabel("epoch (0-based)")
    ax.set_ylabel("MRR")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_bytes_atomic(path, png_bytes(fig))
    return path
