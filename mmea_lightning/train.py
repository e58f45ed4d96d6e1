"""Train and evaluate one aligner: ``python -m mmea_lightning.train dataset=fbyg15k seed_ratio=0.2``.

Composes the Hydra config (``conf/train.yaml``), checks the settings, builds the DataModule, the aligner, the
callbacks, the loggers and the trainer from it, fits (checkpoint selection and early stopping on validation MRR),
tests the checkpoint that ``test_checkpoint`` names on the test links, writes ``metrics.json`` and returns the
metric that a sweeper optimises (``optimized_metric``, e.g. ``val/best_mrr``).

The run directory is opened first (:mod:`mmea_lightning.run_dir`): locked for this process, skipped when it holds
this very run finished, continued from ``checkpoints/last.ckpt`` when it holds it interrupted, refused when it holds
another experiment. The loggers are set up in :mod:`mmea_lightning.loggers`, the summary in
:mod:`mmea_lightning.run_summary`.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, open_dict

from mmea_lightning.config_source import CONFIG_PATH
from mmea_lightning.cpu_threads import check_threads, pin_threads, set_threads
from mmea_lightning.data.splits import check_ratios
from mmea_lightning.data.toy import NotGeneratedHere
from mmea_lightning.lightning.callbacks import LastCheckpoint, RunTimer, instantiate_callbacks
from mmea_lightning.lightning.test_probe import TestProbe
from mmea_lightning.loggers import LoggerContext, finish_loggers, instantiate_loggers, run_hyperparameters
from mmea_lightning.run_dir import RunDirectory, completed_run, open_run_directory, write_summary
from mmea_lightning.run_lock import RunDirectoryBusy
from mmea_lightning.run_summary import (
    EvaluatedWeights,
    build_summary,
    choose_test_checkpoint,
    early_stopping_report,
    evaluated_weights,
    metrics_table,
    print_results,
    recover_from_checkpoint,
)

__all__ = ["USER_ERRORS", "check_settings", "choose_test_checkpoint", "completed_run", "main", "metrics_table",
           "optimized_value", "recover_from_checkpoint", "report_user_error", "run", "train"]

log = logging.getLogger(__name__)


def check_settings(cfg: DictConfig) -> None:
    """Refuse bad top-level settings before any data is read or anything is written (``ValueError`` with the fix)."""
    check_ratios(cfg.get("seed_ratio"), cfg.get("val_ratio"))
    for key in ("seed", "split_seed"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}={value!r} is not an integer: pass e.g. {key}=0.")
    check_threads(cfg.get("threads"))
    choose_test_checkpoint(str(cfg.get("test_checkpoint", "auto")), supervised=True)
    metric = cfg.get("optimized_metric")
    if metric is not None and not isinstance(metric, str):
        raise ValueError(f"optimized_metric={metric!r}: name a key of metrics.json, e.g. optimized_metric=val/best_mrr")


def run(cfg: DictConfig) -> dict:
    """Fit and test one configuration in its run directory; returns what ``metrics.json`` holds (the stored summary
    when the directory holds this very run, finished). ``cfg`` itself is left as it is."""
    check_settings(cfg)
    with open_run_directory(cfg) as run_dir:
        if run_dir.finished is not None:
            return run_dir.finished
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):  # threads=auto becomes the count this run uses (and records)
            cfg.threads = pin_threads(cfg.get("threads"), (run_dir.interrupted_config or {}).get("threads"))
        run_dir.record(cfg)
        return train(cfg, run_dir)


def train(cfg: DictConfig, run_dir: RunDirectory) -> dict:
    """Build everything from ``cfg``, fit, test and write the summary into the (locked) ``run_dir``."""
    threads = set_threads(cfg.get("threads"))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data, _convert_="object")
    datamodule.setup("fit")
    # the FeatureSet is passed after instantiation: Hydra would try to merge a dataclass of tensors into the config
    # config: the module's hyperparameters -- saved in every checkpoint, and logged by Lightning to every logger
    module = instantiate(cfg.model.module, _partial_=True)(features=datamodule.features,
                                                           config=run_hyperparameters(cfg))
    seeds_name = datamodule.summary()["seeds"]
    loggers = instantiate_loggers(cfg.get("logger"), LoggerContext(resuming=run_dir.resume_from is not None,
                                                                   tags=(f"seeds:{seeds_name}",)))
    callbacks = instantiate_callbacks(cfg.get("callbacks"), with_logger=bool(loggers))
    trainer_extra = {}
    if cfg.training.iterative:
        callbacks.append(instantiate(cfg.training.expansion))
        trainer_extra["reload_dataloaders_every_n_epochs"] = 1  # serve the new seed links
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_extra)

    trainer.fit(module, datamodule=datamodule, ckpt_path=run_dir.resume_from)

    timer = next(c for c in callbacks if isinstance(c, RunTimer))
    best = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)  # by val/mrr
    if best is not None and best.best_model_score is None:  # spawned DDP ranks trained in child processes
        recover_from_checkpoint(best, timer, datamodule)
    tested = _weights_to_test(cfg, callbacks, best, timer, datamodule.supervised)
    early_stop = early_stopping_report(callbacks, trainer)
    probe = next((c for c in callbacks if isinstance(c, TestProbe)), None)
    probe_record = probe.summary(validation_selected=tested.policy == "best") if probe is not None else None
    test_metrics = _test(trainer, module, datamodule, tested.ckpt_path, timer) if cfg.get("test") else {}

    summary = build_summary(
        cfg, output_dir=run_dir.path, data_fingerprint=run_dir.identity["data"], test_metrics=test_metrics,
        best_score=best.best_model_score if best is not None else None,
        best_path=best.best_model_path if best is not None else "", tested=tested,
        resumed_from=run_dir.resume_from, described=module.describe(), data_summary=datamodule.summary(),
        early_stop=early_stop, perf=timer.summary, threads=threads)
    if probe_record is not None:
        summary["run"]["test_probe"] = probe_record
    if trainer.is_global_zero:
        finish_loggers(loggers, summary)
        write_summary(run_dir.path, summary)
        print_results(cfg, summary, datamodule.seed_quality, datamodule.split_info.get("seeds"))
    return summary


def _weights_to_test(cfg: DictConfig, callbacks: list, best: ModelCheckpoint | None, timer: RunTimer,
                     supervised: bool) -> EvaluatedWeights:
    """The checkpoint ``test_checkpoint`` names after fit (``best``, or ``last.ckpt``; a warning when ``best`` was
    asked for but no validation check ran)."""
    policy = choose_test_checkpoint(str(cfg.get("test_checkpoint", "auto")), supervised)
    last = next((c for c in callbacks if isinstance(c, LastCheckpoint)), None)
    tested = evaluated_weights(policy, best.best_model_path if best is not None else "",
                               last.file if last is not None else None, timer.epochs_run)
    if policy == "best" and tested.policy != "best" and cfg.get("test"):
        log.warning("no validation check ran (model.max_epochs=%s, model.check_val_every_n_epoch=%s), so there is "
                    "no best checkpoint: the test links evaluate the final weights (%s)", cfg.model.get("max_epochs"),
                    cfg.model.get("check_val_every_n_epoch"), tested.weights)
    return tested


def _test(trainer: L.Trainer, module, datamodule, ckpt_path: str | None, timer: RunTimer) -> dict[str, float]:
    """The test metrics of ``ckpt_path`` (None: the weights in memory); the timer keeps the fit's figures."""
    fit_state = timer.state_dict()  # testing from a checkpoint restores the callbacks' state of that epoch
    results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    test_seconds = timer.eval_seconds["test"]
    timer.load_state_dict(fit_state)
    timer.eval_seconds["test"] = test_seconds
    return {k: float(v) for k, v in results[0].items()}


def optimized_value(summary: dict, metric: str | None) -> float | None:
    """The value of ``optimized_metric`` in the run's summary, for the sweeper (None when unset or not a number).

    Raises:
        ValueError: the summary has no such key (the message lists those it has).
    """
    if metric is None:
        return None
    if metric not in summary:
        known = ", ".join(k for k in summary if k != "run")
        raise ValueError(f"optimized_metric={metric!r} is not in metrics.json: choose one of {known} "
                         "(validation, never test, for a search).")
    value = summary[metric]
    return None if value is None or math.isnan(value) else float(value)


#: errors whose message says what is wrong and how to fix it: printed alone, as the last line, without a traceback
#: (``HYDRA_FULL_ERROR=1`` shows the traceback). ``ValueError`` covers the settings and data checks
#: (:class:`~mmea_lightning.data.errors.DataFormatError` is one).
USER_ERRORS = (ValueError, RunDirectoryBusy, NotGeneratedHere, FileNotFoundError, ImportError)


def report_user_error(err: BaseException) -> None:
    """Print a user-facing error as the very last thing on stderr and exit with status 2."""
    sys.stdout.flush()
    print(f"[mmea-lightning] stopped ({type(err).__name__}; HYDRA_FULL_ERROR=1 shows the traceback):",
          file=sys.stderr)
    print(f"Error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(2)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """The command line: one run (or one job of a multirun); returns what the sweeper optimises."""
    try:
        return optimized_value(run(cfg), cfg.get("optimized_metric"))
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report_user_error(err)


if __name__ == "__main__":
    main()
