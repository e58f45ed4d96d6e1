"""Pseudo-seed quality measured by ``benchmarks/bench_seeds.py --json``: the files under one folder (e.g.
``results/seeds/``), read into one table for the results page (per dataset, generator and stage: seed count, precision
against the gold links -- logging only --, graph coverage, seconds, and the raw-fusion modalities and weights)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mmea_lightning.data.errors import DataFormatError

__all__ = ["load_seed_benchmarks", "seed_benchmark_table"]

_REQUIRED = ("dataset", "generator", "stage", "count", "precision", "coverage", "seconds")


def load_seed_benchmarks(folder: str | Path) -> list[dict]:
    """Every row of every ``*.json`` file in ``folder`` (sorted by file name, rows in file order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"seed-quality folder {folder} does not exist (bench_seeds.py --json files)")
    rows = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataFormatError(path, f"not JSON ({err.msg}).", line=err.lineno,
                                  fix="write it with benchmarks/bench_seeds.py --json.") from err
        if not isinstance(data, list):
            raise DataFormatError(path, "expected a list of rows.", line=1,
                                  fix="write it with benchmarks/bench_seeds.py --json.")
        for i, row in enumerate(data):
            if "error" in row:
                continue
            missing = [k for k in _REQUIRED if k not in row]
            if missing:
                raise DataFormatError(path, f"row {i} lacks {missing}.",
                                      fix="write it with benchmarks/bench_seeds.py --json.")
            rows.append({**row, "file": path.name})
    return rows


def _fusion(info: dict | None) -> str:
    info = info or {}
    weights = info.get("raw_weights") or ({info["modality"]: 1.0} if info.get("modality") else {})
    return ", ".join(f"{m} {w:.3f}" for m, w in weights.items()) or "-"


def seed_benchmark_table(rows: Sequence[dict]) -> list[list[str]]:
    """Table cells: dataset, generator, surface, stage, count, precision, correct, coverage, seconds, raw fusion."""
    return [[r["dataset"], r["generator"], "yes" if r.get("surface") else "no", r["stage"], f"{r['count']:,}",
             f"{r['precision']:.3f}", f"{r.get('correct', round(r['count'] * r['precision'])):,}",
             f"{r['coverage']:.3f}", f"{r['seconds']:.0f}", _fusion(r.get("info"))] for r in rows]
