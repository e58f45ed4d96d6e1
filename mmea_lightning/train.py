"""Train and evaluate one aligner: ``python -m mmea_lightning.train dataset=fbyg15k seed_ratio=0.2``.

Builds the DataModule and the aligner from the composed Hydra config, fits with checkpoint selection and early
stopping on validation MRR, tests the best checkpoint on the test links and writes ``metrics.json`` and the
resolved ``config.yaml`` into the run directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from mmea_lightning.lightning.callbacks import RunTimer
from mmea_lightning.models.modalities import SURFACE_MODALITIES
from mmea_lightning.seeds.quality import quality_table

log = logging.getLogger(__name__)

METRIC_ORDER = ("hits@1", "hits@5", "hits@10", "mrr", "mr")


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON so that ``path`` is either absent or complete."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
    os.replace(tmp, path)


def metrics_table(metrics: dict[str, float]) -> str:
    """A plain-text table: one row per protocol prefix, one column per metric."""
    prefixes = []
    for key in metrics:
        prefix, _, name = key.partition("/")
        if name in METRIC_ORDER and prefix not in prefixes:
            prefixes.append(prefix)
    width = max([len(p) for p in prefixes] + [8])
    lines = [f"{'protocol':<{width}}  " + "  ".join(f"{m:>8}" for m in METRIC_ORDER)]
    for prefix in prefixes:
        cells = []
        for name in METRIC_ORDER:
            value = metrics.get(f"{prefix}/{name}")
            cells.append(f"{value:8.4f}" if name != "mr" and value is not None else
                         (f"{value:8.1f}" if value is not None else f"{'-':>8}"))
        lines.append(f"{prefix:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def run(cfg: DictConfig) -> dict:
    """Fit and test one configuration; returns what ``metrics.json`` holds."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data, _convert_="object")
    datamodule.setup("fit")
    # the FeatureSet is passed after instantiation: Hydra would try to merge a dataclass of tensors into the config
    module = instantiate(cfg.model.module, _partial_=True)(features=datamodule.features)

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    timer = next((c for c in callbacks if isinstance(c, RunTimer)), None)
    if timer is None:
        timer = RunTimer()
        callbacks.append(timer)
    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    trainer_extra = {}
    if cfg.training.iterative:
        callbacks.append(instantiate(cfg.training.expansion))
        trainer_extra["reload_dataloaders_every_n_epochs"] = 1  # serve the new seed links
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_extra)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    test_metrics: dict[str, float] = {}
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    if cfg.get("test"):
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        test_metrics = {k: float(v) for k, v in results[0].items()}

    best_val = checkpoint.best_model_score if checkpoint is not None else None
    described = module.describe()
    summary = {
        **test_metrics,
        "val/best_mrr": float(best_val) if best_val is not None else None,
        "run": {
            "output_dir": str(output_dir),
            "best_checkpoint": best_path,
            "seed": cfg.seed,
            "iterative_training": bool(cfg.training.iterative),
            "surface": bool(set(described.get("modalities_used", [])) & set(SURFACE_MODALITIES)),
            **described,
            **datamodule.summary(),
            "perf": timer.summary,
        },
    }
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "metrics.json", summary)
        if datamodule.seed_quality:
            print(f"\n{datamodule.split_info['seeds']} seeds (precision against the gold links: logging only)")
            print(quality_table(datamodule.seed_quality))
        if test_metrics:
            print(f"\n{cfg.dataset.name} / {cfg.model.name} (seed_ratio={cfg.seed_ratio}, seed={cfg.seed}, "
                  f"split_seed={cfg.split_seed}; modalities: {', '.join(summary['run']['modalities_used'])})")
            print(metrics_table(test_metrics))
            perf = summary["run"]["perf"]
            print(f"{perf['seconds_per_epoch']:.3f} s/epoch, peak memory {perf['peak_memory_mb']:.0f} MiB; "
                  f"results in {output_dir / 'metrics.json'}")
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    summary = run(cfg)
    value = summary.get("val/best_mrr")  # what sweepers optimise: validation, never test
    return None if value is None or math.isnan(value) else value


if __name__ == "__main__":
    main()
