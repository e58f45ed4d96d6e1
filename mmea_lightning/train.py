"""Train and evaluate one aligner: ``python -m mmea_lightning.train dataset=fbyg15k seed_ratio=0.2``.

Builds the DataModule and the aligner from the composed Hydra config, fits with checkpoint selection and early
stopping on validation MRR, tests the best checkpoint on the test links and writes ``metrics.json`` and the
resolved ``config.yaml`` into the run directory.

Re-running into the same directory (``hydra.run.dir=<run dir>``, or ``hydra.sweep.dir=<sweep dir>`` for a whole
sweep) resumes: a run whose ``metrics.json`` exists is skipped, an interrupted one continues from
``checkpoints/last.ckpt`` (``resume=false`` starts over) -- both only when the directory's ``run_identity.json``
(every result-relevant setting and the content hash of every input file, :mod:`mmea_lightning.run_identity`) equals
this run's; otherwise the run is refused with the list of differences.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from mmea_lightning.atomic_files import write_json_atomic, write_text_atomic
from mmea_lightning.config_source import CONFIG_PATH
from mmea_lightning.data.fingerprint import input_digests
from mmea_lightning.data.loader import DatasetSpec, resolve_root
from mmea_lightning.data.splits import check_ratios
from mmea_lightning.data.toy import NotGeneratedHere
from mmea_lightning.lightning.callbacks import RunTimer
from mmea_lightning.data.modalities import SURFACE_MODALITIES
from mmea_lightning.run_identity import IDENTITY_FILE, check_same_run, run_identity
from mmea_lightning.run_lock import RunDirectoryBusy, run_lock
from mmea_lightning.seeds.quality import quality_table

log = logging.getLogger(__name__)

METRIC_ORDER = ("hits@1", "hits@5", "hits@10", "mrr", "mr")


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


def completed_run(output_dir: Path, identity: dict) -> dict | None:
    """The stored summary when ``output_dir`` already holds a finished run of this very experiment.

    Raises:
        RunIdentityMismatch: the directory holds a finished run of different settings or data.
    """
    metrics_path = output_dir / "metrics.json"
    if not metrics_path.is_file():
        return None
    check_same_run(output_dir, identity, f"a finished run ({metrics_path})")
    return json.loads(metrics_path.read_text())


def resume_checkpoint(cfg: DictConfig, output_dir: Path, identity: dict) -> str | None:
    """``ckpt_path`` when given, else the interrupted run's ``checkpoints/last.ckpt`` (with ``resume=true``)."""
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    last = output_dir / "checkpoints" / "last.ckpt"
    if not (cfg.get("resume", True) and last.is_file()):
        return None
    check_same_run(output_dir, identity, f"an interrupted run ({last})")
    return str(last)


def input_fingerprint(cfg: DictConfig) -> dict[str, str]:
    """The content fingerprint of the dataset's input files (the toy pair is generated first if needed)."""
    spec = DatasetSpec.from_config(OmegaConf.to_container(cfg.dataset, resolve=True))
    return input_digests(spec, resolve_root(spec, cfg.get("data_dir"), cfg.paths.cache_dir))


def build_loggers(cfg: DictConfig, extra_tags: list[str], resuming: bool = False) -> list:
    """The configured loggers; W&B gets ``extra_tags``; a resumed run's CSV log goes to ``csv/resume-<i>/`` so
    that the interrupted run's ``csv/metrics.csv`` is kept."""
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        if logger_cfg is None:
            continue
        target = str(logger_cfg.get("_target_", ""))
        if target.endswith("WandbLogger"):
            extra = {"tags": [*(logger_cfg.get("tags") or []), *extra_tags]}
            previous = Path(logger_cfg.save_dir) / "wandb" / "latest-run"
            if resuming and previous.exists():  # continue the interrupted W&B run (its id ends the dir's name)
                extra.update(id=previous.resolve().name.rsplit("-", 1)[-1], resume="allow")
            loggers.append(instantiate(logger_cfg, **extra))
        elif target.endswith("CSVLogger") and resuming:
            base = Path(logger_cfg.save_dir) / logger_cfg.name
            index = 1
            while (base / f"resume-{index}").exists():
                index += 1
            loggers.append(instantiate(logger_cfg, version=f"resume-{index}"))
        else:
            loggers.append(instantiate(logger_cfg))
    return loggers


TEST_CHECKPOINTS = ("auto", "best", "last")


def choose_test_checkpoint(choice: str, seeds_name: str) -> str:
    """``best`` or ``last``: which weights the test links evaluate. ``auto`` is ``best`` (validation MRR) with gold
    seeds and ``last`` with pseudo seeds: their validation share is the easiest pseudo pairs (the most similar
    names/images), which every model ranks almost perfectly within a few epochs, so "best" would be the first check."""
    if choice not in TEST_CHECKPOINTS:
        raise ValueError(f"test_checkpoint={choice!r}: choose one of {', '.join(TEST_CHECKPOINTS)}")
    if choice == "auto":
        return "best" if seeds_name == "gold" else "last"
    return choice


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


def check_settings(cfg: DictConfig) -> None:
    """Refuse bad top-level settings before any data is read or anything is written (``ValueError`` with the fix)."""
    check_ratios(cfg.get("seed_ratio"), cfg.get("val_ratio"))
    for key in ("seed", "split_seed"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}={value!r} is not an integer: pass e.g. {key}=0.")
    threads = cfg.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads={threads!r}: pass a positive integer (threads=1 per job when jobs run side by "
                         "side), or leave it unset (null) for torch's default.")
    choose_test_checkpoint(str(cfg.get("test_checkpoint", "auto")), "gold")


def run(cfg: DictConfig) -> dict:
    """Fit and test one configuration; returns what ``metrics.json`` holds.

    One process per run directory (:func:`~mmea_lightning.run_lock.run_lock`): a job that is still running elsewhere
    is refused, not trained twice in the same place."""
    check_settings(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(output_dir):
        return _run(cfg, output_dir)


def _run(cfg: DictConfig, output_dir: Path) -> dict:
    identity = run_identity(cfg, input_fingerprint(cfg))
    if cfg.get("resume", True):
        done = completed_run(output_dir, identity)
        if done is not None:
            log.info("%s already holds this run's metrics.json: skipped (resume=false re-runs it)", output_dir)
            print(f"skipped: {output_dir / 'metrics.json'} exists (finished earlier)")
            return done
    else:  # start over: no stale checkpoint or result of an earlier run may survive next to the new ones
        for stale in (output_dir / "checkpoints").glob("*.ckpt"):  # only what ModelCheckpoint wrote, nothing else
            stale.unlink()
        (output_dir / "metrics.json").unlink(missing_ok=True)
    ckpt_path = resume_checkpoint(cfg, output_dir, identity)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    write_text_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json_atomic(output_dir / IDENTITY_FILE, identity)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))  # e.g. 1 per job when a local launcher runs several at once
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data, _convert_="object")
    datamodule.setup("fit")
    # the FeatureSet is passed after instantiation: Hydra would try to merge a dataclass of tensors into the config
    module = instantiate(cfg.model.module, _partial_=True)(features=datamodule.features,
                                                           config=OmegaConf.to_container(cfg, resolve=True))

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    timer = next((c for c in callbacks if isinstance(c, RunTimer)), None)
    if timer is None:
        timer = RunTimer()
        callbacks.append(timer)
    # the checkpoint that tracks the best validation MRR (the other one, ``last_checkpoint``, keeps the latest state)
    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    trainer_extra = {}
    if cfg.training.iterative:
        callbacks.append(instantiate(cfg.training.expansion))
        trainer_extra["reload_dataloaders_every_n_epochs"] = 1  # serve the new seed links
    seeds_name = datamodule.summary()["seeds"]
    test_policy = choose_test_checkpoint(str(cfg.get("test_checkpoint", "auto")), seeds_name)
    loggers = build_loggers(cfg, [f"seeds:{seeds_name}"], resuming=ckpt_path is not None)
    if not loggers:  # LearningRateMonitor refuses to run without a logger (logger=none)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_extra)

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if checkpoint is not None and checkpoint.best_model_score is None:
        recover_from_checkpoint(checkpoint, timer, datamodule)

    test_metrics: dict[str, float] = {}
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    # "last": the weights in memory after fit (with ddp_spawn, Lightning hands rank 0's final weights back)
    test_path = (best_path or None) if test_policy == "best" else None
    if test_policy == "best" and not best_path and cfg.get("test"):
        test_policy = "last (no best checkpoint: no validation check ran)"
        log.warning("no validation check ran (model.max_epochs=%s, model.check_val_every_n_epoch=%s), so there is "
                    "no best checkpoint: the test links evaluate the final weights", trainer.max_epochs,
                    cfg.model.get("check_val_every_n_epoch"))
    final_epoch = trainer.current_epoch - 1  # the last epoch trained (current_epoch counts the finished ones)
    stopper = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
    early_stop = None
    if stopper is not None and stopper.stopped_epoch > 0:  # say so: the run is shorter than model.max_epochs
        early_stop = {"epoch": int(stopper.stopped_epoch), "max_epochs": int(trainer.max_epochs),
                      "monitor": stopper.monitor, "patience_checks": int(stopper.patience)}
        log.warning("early stopping ended training after epoch %d of %d: %s did not improve for %d validation "
                    "checks (callbacks.early_stopping=null trains every epoch)", early_stop["epoch"],
                    early_stop["max_epochs"], stopper.monitor, stopper.patience)
    if cfg.get("test"):
        fit_state = timer.state_dict()  # testing from a checkpoint restores the callbacks' state of that epoch
        results = trainer.test(module, datamodule=datamodule, ckpt_path=test_path, verbose=False)
        test_metrics = {k: float(v) for k, v in results[0].items()}
        test_seconds = timer.eval_seconds["test"]
        timer.load_state_dict(fit_state)
        timer.eval_seconds["test"] = test_seconds

    best_val = checkpoint.best_model_score if checkpoint is not None else None
    described = module.describe()
    summary = {
        **test_metrics,
        "val/best_mrr": float(best_val) if best_val is not None else None,
        "run": {
            "output_dir": str(output_dir),
            "best_checkpoint": best_path,
            "test_checkpoint": {"policy": test_policy,
                                "weights": test_path or f"final weights (epoch {final_epoch})"},
            "resumed_from": ckpt_path,
            "data_fingerprint": identity["data"],
            "seed": cfg.seed,
            "iterative_training": bool(cfg.training.iterative),
            "expansion": ({k: v for k, v in OmegaConf.to_container(cfg.training.expansion).items() if k != "_target_"}
                          if cfg.training.iterative else None),
            "surface": bool(set(described.get("modalities_used", [])) & set(SURFACE_MODALITIES)),
            **described,
            **datamodule.summary(),
            "early_stopping": early_stop,
            "perf": timer.summary,
        },
    }
    if trainer.is_global_zero:
        for logger in loggers:
            if isinstance(logger, WandbLogger):  # dashboards show the final test metrics, not the last logged step
                logger.experiment.summary.update({k: v for k, v in summary.items() if k != "run"})
                logger.experiment.summary.update({"seeds": seeds_name, "surface": summary["run"]["surface"],
                                                  "seconds_per_epoch": summary["run"]["perf"]["seconds_per_epoch"]})
                logger.experiment.finish()  # the next job of a sweep in this process starts its own W&B run
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
    try:
        summary = run(cfg)
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report_user_error(err)
    value = summary.get("val/best_mrr")  # what sweepers optimise: validation, never test
    return None if value is None or math.isnan(value) else value


if __name__ == "__main__":
    main()
