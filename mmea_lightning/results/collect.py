"""Read finished runs (``metrics.json`` + ``config.yaml`` + ``run_identity.json`` of each run directory) into one flat
table, each run with the id of its setting (:mod:`.settings`: what must agree for runs to be repetitions)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from mmea_lightning.results.settings import run_setting, setting_id

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("hits@1", "hits@5", "hits@10", "mrr", "mr")
#: the column with each run's setting id (runs with one id are repetitions: they differ at most in seed / split_seed)
SETTING = "setting"
#: the column with each run's full setting (:func:`~mmea_lightning.results.settings.run_setting`); not written to CSV
IDENTITY = "identity"
#: the column with a run's test probe record (``run.test_probe`` of ``metrics.json``: the validation MRR and the test
#: metrics of every validation check, see :mod:`mmea_lightning.lightning.test_probe`) or ``None``; not written to CSV
PROBE = "test_probe"
#: columns that hold structures, not values
NESTED: tuple[str, ...] = (IDENTITY, PROBE)

#: report column -> config keys where a run may hold it (first present wins); aligners and seed generators that
#: name a hyper-parameter differently add their key here
CONFIG_AXES: dict[str, tuple[str, ...]] = {
    "theta": ("model.module.aligner.theta", "model.module.aligner.cprl.theta"),
    "alpha": ("model.module.aligner.alpha", "model.module.aligner.cprl.alpha"),
    "ablation": ("model.module.aligner.ablation",),
    "clusters": ("seeds.cluster_sampling.clusters", "seeds.num_clusters", "seeds.clusters"),
}
#: axes that only mean something for some models (EVA's NCA also has an ``alpha``; it is not MPSEA's MI weight)
AXIS_MODELS: dict[str, frozenset[str]] = {"theta": frozenset({"mpsea"}), "alpha": frozenset({"mpsea"})}


def find_runs(roots: Iterable[str | Path]) -> list[Path]:
    """Run directories (those holding ``metrics.json``) under each root, sorted; a root may be a run itself."""
    runs: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist: pass multirun or run directories")
        runs.update(path.parent for path in root.rglob("metrics.json"))
    return sorted(runs)


def _select(config, keys: Sequence[str]):
    for key in keys:
        value = OmegaConf.select(config, key, default=None)
        if value is not None:
            return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return None


def checkpoint_epoch(info: dict, config) -> int | None:
    """The (0-based) epoch of the checkpoint the run was tested with, read from its file name with the run's
    ``callbacks.model_checkpoint.filename`` template (``best-epoch{epoch:03d}``); ``None`` when the run tested no
    best checkpoint (``test_checkpoint.policy`` other than ``best``) or the name does not hold the epoch."""
    tested = info.get("test_checkpoint") or {}
    template = OmegaConf.select(config, "callbacks.model_checkpoint.filename", default=None)
    if tested.get("policy") != "best" or not tested.get("weights") or not template or "{epoch" not in template:
        return None
    pattern = ""
    for literal, field in re.findall(r"([^{]*)(\{[^}]*\}|$)", template):
        pattern += re.escape(literal)
        if field:
            pattern += r"(?P<epoch>\d+)" if re.fullmatch(r"\{epoch(:[^}]*)?\}", field) else ".*?"
    match = re.fullmatch(pattern + r"(-v\d+)?", Path(tested["weights"]).stem)
    return int(match["epoch"]) if match else None


def load_run(run_dir: Path) -> dict:
    """One flat record: what was run (dataset, model, seeds, ratio, seeds of model and split, surface, iterative,
    the hyper-parameters of :data:`CONFIG_AXES`), the run's setting (:data:`SETTING` id, :data:`IDENTITY`), every
    ``<protocol>/<metric>`` and the run's cost."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config_path = run_dir / "config.yaml"
    config = OmegaConf.load(config_path) if config_path.is_file() else OmegaConf.create({})
    info = metrics.get("run", {})
    split = info.get("split", {})
    perf = info.get("perf", {})
    record = {
        "run_dir": str(run_dir),
        "dataset": info.get("dataset", OmegaConf.select(config, "dataset.name")),
        "model": info.get("model", OmegaConf.select(config, "model.name")),
        "seeds": info.get("seeds", "gold"),
        "seed_ratio": split.get("seed_ratio", OmegaConf.select(config, "seed_ratio")),
        "seed": info.get("seed", OmegaConf.select(config, "seed")),
        "split_seed": split.get("split_seed", OmegaConf.select(config, "split_seed")),
        "surface": bool(info.get("surface", False)),
        "iterative": bool(info.get("iterative_training", False)),
        "modalities": ",".join(info.get("modalities_used", [])),
        "ablation_effective": info.get("ablation_effective"),  # False: the variant equals the full model here
        "val/best_mrr": metrics.get("val/best_mrr"),
        "seconds_per_epoch": perf.get("seconds_per_epoch"),
        "epochs_run": perf.get("epochs_run"),
        "best_epoch": checkpoint_epoch(info, config),
        "train_seconds": perf.get("train_seconds"),
        "peak_memory_mb": perf.get("peak_memory_mb"),
    }
    for column, keys in CONFIG_AXES.items():
        models = AXIS_MODELS.get(column)
        record[column] = _select(config, keys) if models is None or record["model"] in models else None
    record[PROBE] = info.get("test_probe") if (info.get("test_probe") or {}).get("checks") else None
    setting = run_setting(run_dir, metrics, config)
    record[SETTING] = setting_id(setting)
    record[IDENTITY] = setting
    record.update({key: value for key, value in metrics.items() if "/" in key and key != "val/best_mrr"})
    return record


def collect(roots: Iterable[str | Path]) -> pd.DataFrame:
    """Every finished run under ``roots`` as one row (see :func:`load_run`)."""
    runs = find_runs(roots)
    if not runs:
        raise FileNotFoundError(f"no metrics.json under {[str(r) for r in roots]}: no finished run to report")
    return pd.DataFrame([load_run(run) for run in runs])


def seed_quality(roots: Iterable[str | Path]) -> pd.DataFrame:
    """Per-stage seed quality of the seed generators (``run.seed_quality`` in ``metrics.json``: a list of
    ``{"generator", "stage", "count", "precision", "coverage", "seconds", ...}`` rows, see
    :mod:`mmea_lightning.seeds.report`), one row per run and stage."""
    rows = []
    for run_dir in find_runs(roots):
        info = json.loads((run_dir / "metrics.json").read_text()).get("run", {})
        for stage in info.get("seed_quality") or []:
            rows.append({"dataset": info.get("dataset"), "seeds": info.get("seeds"), "run_dir": str(run_dir),
                         **stage})
    return pd.DataFrame(rows)
