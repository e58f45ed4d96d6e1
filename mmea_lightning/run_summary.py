"""What a finished run reports: which weights the test links evaluate, ``metrics.json`` and the printed table.

``metrics.json`` holds the test metrics (``<protocol>/<metric>``), ``val/best_mrr`` and a ``run`` block: where the
run wrote, which checkpoint was tested and why (``test_checkpoint``), what it resumed from, the data fingerprint,
the modalities the aligner used, the split, early stopping, the thread count and the timings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from mmea_lightning.data.modalities import SURFACE_MODALITIES
from mmea_lightning.lightning.callbacks import RunTimer
from mmea_lightning.seeds.quality import quality_table

__all__ = ["METRIC_ORDER", "TEST_CHECKPOINTS", "EvaluatedWeights", "build_summary", "choose_test_checkpoint",
           "early_stopping_report", "metrics_table", "print_results", "recover_from_checkpoint", "evaluated_weights"]

log = logging.getLogger(__name__)

METRIC_ORDER = ("hits@1", "hits@5", "hits@10", "mrr", "mr")
TEST_CHECKPOINTS = ("auto", "best", "last")
NO_VALIDATION = "last (no best checkpoint: no validation check ran)"


def metrics_table(metrics: Mapping[str, float]) -> str:
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


def choose_test_checkpoint(choice: str, supervised: bool) -> str:
    """``best`` or ``last``: which weights the test links evaluate. ``auto`` is ``best`` (validation MRR) with gold
    seeds (``supervised``) and ``last`` with pseudo seeds: their validation share is the easiest pseudo pairs (the
    most similar names/images), which every model ranks almost perfectly within a few epochs, so "best" would be the
    first check."""
    if choice not in TEST_CHECKPOINTS:
        raise ValueError(f"test_checkpoint={choice!r}: choose one of {', '.join(TEST_CHECKPOINTS)}")
    if choice == "auto":
        return "best" if supervised else "last"
    return choice


@dataclass(frozen=True)
class EvaluatedWeights:
    """The weights the test links evaluate.

    Attributes:
        policy: ``best``, ``last``, or why ``best`` fell back to ``last``.
        ckpt_path: the checkpoint ``trainer.test`` loads; None: the weights in memory at the end of fit.
        weights: what ``metrics.json`` names as tested (the checkpoint's path, or which in-memory weights).
    """

    policy: str
    ckpt_path: str | None
    weights: str

    def as_dict(self) -> dict:
        return {"policy": self.policy, "weights": self.weights}


def evaluated_weights(policy: str, best_path: str, last_path: Path | None, epochs_trained: int) -> EvaluatedWeights:
    """The checkpoint that ``policy`` (``best`` / ``last``) names, as it exists after fit.

    ``best`` without a best checkpoint (no validation check ran) falls back to ``last``, and says so. ``last`` is the
    last checkpoint's file (:class:`~mmea_lightning.lightning.callbacks.LastCheckpoint` writes it when training ends),
    or the weights in memory when there is none (no ``last_checkpoint`` callback, or nothing trained)."""
    if policy == "best" and best_path:
        return EvaluatedWeights("best", best_path, best_path)
    if policy == "best":
        policy = NO_VALIDATION
    if last_path is not None and last_path.is_file():
        return EvaluatedWeights(policy, str(last_path), str(last_path))
    state = f"epoch {epochs_trained - 1}" if epochs_trained > 0 else "untrained"
    return EvaluatedWeights(policy, None, f"final weights ({state}), not saved")


def recover_from_checkpoint(checkpoint: ModelCheckpoint, timer: RunTimer, datamodule=None) -> None:
    """Spawned DDP ranks (``ddp_spawn``) train in child processes: read the best validation score and the timings
    back from the last checkpoint they wrote -- and, given the ``datamodule``, the seed links and round history of
    iterative training (the workers' DataModule state). Read with ``weights_only=True``: tensors and plain values."""
    candidates = [checkpoint.last_model_path, Path(checkpoint.dirpath or ".") / "last.ckpt", checkpoint.best_model_path]
    path = next((str(p) for p in candidates if p and Path(p).is_file()), None)
    if path is None:
        return
    saved = torch.load(path, map_location="cpu", weights_only=True)
    states = saved.get("callbacks", {})
    if checkpoint.state_key in states:
        checkpoint.best_model_score = states[checkpoint.state_key].get("best_model_score")
    if timer.state_key in states:
        timer.load_state_dict(states[timer.state_key])
    if datamodule is not None and type(datamodule).__qualname__ in saved:
        datamodule.load_state_dict(saved[type(datamodule).__qualname__])


def early_stopping_report(callbacks: Sequence[Callback], trainer: L.Trainer) -> dict | None:
    """When early stopping ended training before ``max_epochs``: when and why (also logged as a warning)."""
    stopper = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
    if stopper is None or stopper.stopped_epoch <= 0:
        return None
    report = {"epoch": int(stopper.stopped_epoch), "max_epochs": int(trainer.max_epochs),
              "monitor": stopper.monitor, "patience_checks": int(stopper.patience)}
    log.warning("early stopping ended training after epoch %d of %d: %s did not improve for %d validation checks "
                "(callbacks.early_stopping=null trains every epoch)", report["epoch"], report["max_epochs"],
                stopper.monitor, stopper.patience)
    return report


def build_summary(cfg: DictConfig, *, output_dir: Path, data_fingerprint: Mapping, test_metrics: Mapping[str, float],
                  best_score, best_path: str, tested: EvaluatedWeights, resumed_from: str | None, described: Mapping,
                  data_summary: Mapping, early_stop: dict | None, perf: Mapping, threads: int) -> dict:
    """What ``metrics.json`` holds (see the module docstring)."""
    return {
        **test_metrics,
        "val/best_mrr": float(best_score) if best_score is not None else None,
        "run": {
            "output_dir": str(output_dir),
            "best_checkpoint": best_path,
            "test_checkpoint": tested.as_dict(),
            "resumed_from": resumed_from,
            "data_fingerprint": dict(data_fingerprint),
            "seed": cfg.seed,
            "iterative_training": bool(cfg.training.iterative),
            "expansion": ({k: v for k, v in OmegaConf.to_container(cfg.training.expansion).items() if k != "_target_"}
                          if cfg.training.iterative else None),
            "surface": bool(set(described.get("modalities_used", [])) & set(SURFACE_MODALITIES)),
            **described,
            **data_summary,
            "early_stopping": early_stop,
            "threads": threads,
            "perf": dict(perf),
        },
    }


def print_results(cfg: DictConfig, summary: Mapping, seed_quality: list[dict], seeds_label: str | None) -> None:
    """The seed quality (pseudo seeds) and the test table, on stdout."""
    if seed_quality:
        print(f"\n{seeds_label} seeds (precision against the gold links: logging only)")
        print(quality_table(seed_quality))
    test_metrics = {k: v for k, v in summary.items() if k != "run" and k != "val/best_mrr"}
    if not test_metrics:
        return
    info = summary["run"]
    print(f"\n{cfg.dataset.name} / {cfg.model.name} (seed_ratio={cfg.seed_ratio}, seed={cfg.seed}, "
          f"split_seed={cfg.split_seed}; modalities: {', '.join(info['modalities_used'])})")
    print(metrics_table(test_metrics))
    perf = info["perf"]
    print(f"{perf['seconds_per_epoch']:.3f} s/epoch, peak memory {perf['peak_memory_mb']:.0f} MiB; "
          f"results in {Path(info['output_dir']) / 'metrics.json'}")
