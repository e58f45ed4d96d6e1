"""The per-stage seed report of an unsupervised run: quality rows (precision added here, from the gold links, for
logging only -- after the seeds are built) and the files written to ``<run dir>/seeds``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmea_lightning.atomic_files import write_json_atomic, write_text_atomic
from mmea_lightning.seeds.base import SeedGeneration
from mmea_lightning.seeds.quality import quality_table, seed_precision

__all__ = ["seed_quality_rows", "write_seed_outputs"]

ROW_KEYS = ("count", "precision", "correct", "coverage", "seconds", "cached")


def seed_quality_rows(generation: SeedGeneration, gold_links: np.ndarray) -> list[dict]:
    """One row per stage: its report plus ``correct`` / ``precision`` against ``gold_links``."""
    rows = []
    for stage in generation.stages:
        rows.append({"generator": generation.generator, "stage": stage.name, **stage.report,
                     **seed_precision(stage.links, gold_links)})
    return rows


def summary_rows(rows: list[dict]) -> list[dict]:
    """The headline columns of ``rows`` (for metrics.json and the printed table)."""
    return [{"generator": r["generator"], "stage": r["stage"], **{k: r.get(k) for k in ROW_KEYS}} for r in rows]


def write_seed_outputs(directory: str | Path, generation: SeedGeneration, rows: list[dict]) -> None:
    """``<stage>_links.tsv`` per stage, ``report.json`` (every stage's full report) and ``report.txt`` (the table)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stage in generation.stages:
        np.savetxt(directory / f"{stage.name}_links.tsv", stage.links, fmt="%d", delimiter="\t")
    write_json_atomic(directory / "report.json", {"generator": generation.generator, "info": generation.info,
                                                  "stages": rows})
    write_text_atomic(directory / "report.txt", quality_table(summary_rows(rows)) + "\n")
