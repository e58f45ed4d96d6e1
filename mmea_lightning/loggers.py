"""A run's loggers (``conf/logger/*``): built from the config, given the resolved config, finished with the summary.

* Every configured logger is a Lightning logger instantiated from its ``_target_``; entries set to null are left out.
* Every logger receives the resolved config as hyperparameters: :func:`run_hyperparameters` is what the module saves
  as its hyperparameters (``AlignerModule(config=...)``), and Lightning logs a module's hyperparameters to every
  logger when fit or test starts -- on rank 0, inside the worker process under ``ddp_spawn`` (logging them from the
  main process first would create the CSV writer there, whose copy in the workers then loses track of the file's
  columns). So the W&B run's config, the CSV logger's ``hparams.yaml`` and any other Lightning logger's store hold
  every setting: a dashboard filters and groups the runs of a sweep by any of them (``seed_ratio``, ``model.name``,
  ``model.module.optimizer.lr``, ...).
* A resumed run continues its loggers where the interrupted run left them: :data:`BUILD_OPTIONS` holds, per logger
  class (matched with ``issubclass``, so subclasses are covered), the extra constructor arguments -- the W&B run id
  of the interrupted run (the same dashboard run goes on), a new CSV version ``csv/resume-<i>/`` (the interrupted
  run's ``csv/metrics.csv`` is kept).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

__all__ = ["BUILD_OPTIONS", "LoggerContext", "finish_loggers", "instantiate_loggers", "run_hyperparameters"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoggerContext:
    """What a logger may need to know about the run when it is built.

    Attributes:
        resuming: the run continues an interrupted one (from its ``last.ckpt``).
        tags: labels known only once the data is set up (e.g. ``seeds:gold``), for loggers that take tags.
    """

    resuming: bool = False
    tags: Sequence[str] = field(default_factory=tuple)


def _wandb_options(cfg: DictConfig, context: LoggerContext) -> dict:
    options: dict = {"tags": [*(cfg.get("tags") or []), *context.tags]}
    previous = Path(cfg.save_dir) / "wandb" / "latest-run"
    if context.resuming and previous.exists():  # the interrupted W&B run: its id ends the directory's name
        options.update(id=previous.resolve().name.rsplit("-", 1)[-1], resume="allow")
    return options


def _csv_options(cfg: DictConfig, context: LoggerContext) -> dict:
    if not context.resuming:
        return {}
    base = Path(cfg.save_dir) / cfg.name
    index = 1
    while (base / f"resume-{index}").exists():
        index += 1
    return {"version": f"resume-{index}"}


#: extra constructor arguments per logger class (the first class in this order that the configured class derives from)
BUILD_OPTIONS: dict[type[Logger], Callable[[DictConfig, LoggerContext], dict]] = {
    WandbLogger: _wandb_options,
    CSVLogger: _csv_options,
}


def _build_options(cfg: DictConfig, context: LoggerContext) -> dict:
    cls = get_class(cfg._target_)
    for base, options in BUILD_OPTIONS.items():
        if issubclass(cls, base):
            return options(cfg, context)
    return {}


def instantiate_loggers(loggers_cfg: Mapping | None, context: LoggerContext | None = None) -> list[Logger]:
    """The loggers configured under ``logger`` (``logger=none``: none)."""
    context = context or LoggerContext()
    loggers = []
    for name, cfg in (loggers_cfg or {}).items():
        if cfg is None:
            continue
        if "_target_" not in cfg:
            raise ValueError(f"logger.{name} has no _target_: give the Lightning logger class, e.g. "
                             f"_target_: lightning.pytorch.loggers.CSVLogger (or logger.{name}=null to leave it out).")
        loggers.append(instantiate(cfg, **_build_options(cfg, context)))
    return loggers


def run_hyperparameters(cfg: DictConfig) -> dict:
    """The resolved config as plain containers (Hydra's own ``hydra`` node left out): the module's hyperparameters,
    hence what every logger receives."""
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("hydra", None)
    return params


def finish_loggers(loggers: Sequence[Logger], summary: Mapping) -> None:
    """Hand the run's summary to the loggers that keep one. A W&B run's summary shows the final test metrics,
    ``val/best_mrr``, the seed generator and the speed (not the last logged step), and the run is finished so that
    the next job of a sweep in this process starts its own."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            info = summary.get("run", {})
            logger.experiment.summary.update({k: v for k, v in summary.items() if k != "run"})
            logger.experiment.summary.update({"seeds": info.get("seeds"), "surface": info.get("surface"),
                                              "seconds_per_epoch": info.get("perf", {}).get("seconds_per_epoch")})
            logger.experiment.finish()
