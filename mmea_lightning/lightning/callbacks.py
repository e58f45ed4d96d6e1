"""Callbacks shared by every run, and how a run builds its callbacks from ``conf/callbacks``."""

from __future__ import annotations

import resource
import time
from collections.abc import Mapping
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class EpochLearningRateMonitor(LearningRateMonitor):
    """Logs, once per epoch, the learning rate that the epoch's first step uses (``lr-<Optimizer>``).

    Lightning's own monitor logs an epoch's rate in ``on_train_epoch_start``, where it may run before the hooks that
    change it then: the module re-sizing a per-step schedule, or iterative training restarting it. Logging at the
    first batch, after every epoch-start hook, records the rate really used. Each row also carries its ``epoch``,
    as the module's own logged metrics do (Lightning's monitor logs by step only, leaving that cell empty).
    """

    def __init__(self, log_momentum: bool = False, log_weight_decay: bool = False) -> None:
        super().__init__(logging_interval="epoch", log_momentum=log_momentum, log_weight_decay=log_weight_decay)

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        pass

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx != 0:
            return
        stats = self._extract_stats(trainer, "any")  # as the base class, with logging_interval="epoch"
        if stats:
            stats["epoch"] = trainer.current_epoch
            for logger in trainer.loggers:
                logger.log_metrics(stats, step=trainer.fit_loop.epoch_loop._batches_that_stepped)


class RunTimer(L.Callback):
    """Records seconds per training epoch (training only: validation excluded), validation/test seconds and peak
    memory; logged as ``perf/*`` and kept in :attr:`summary` for ``metrics.json``. Also the process CPU seconds per
    epoch (all threads): on a machine shared with other jobs, wall time measures the neighbours as much as the run.
    ``epochs_run`` counts every training epoch that ended, in this process or (through the checkpoint) in the
    interrupted one a run resumed from -- also an epoch whose start a resumed run never saw (not timed then).
    """

    def __init__(self) -> None:
        self.epochs_run = 0  # every training epoch that ended, timed or not
        self.epoch_seconds: list[float] = []
        self.epoch_cpu_seconds: list[float] = []
        self.validation_checks = 0
        self.validation_cpu_seconds = 0.0
        self._cpu_start = 0.0
        self._validation_cpu_in_epoch = 0.0
        self._eval_cpu_start = 0.0
        self.eval_seconds: dict[str, float] = {"validation": 0.0, "test": 0.0}
        self._start: float | None = None
        self._eval_start = 0.0
        self._validation_in_epoch = 0.0
        self._peak_elsewhere = 0.0  # peak memory of the processes that ran before (a resumed run, spawned ranks)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        self._validation_in_epoch = 0.0
        self._validation_cpu_in_epoch = 0.0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs_run += 1
        if self._start is None:  # a run resumed from a checkpoint taken inside this epoch: its start is unknown
            return
        # Lightning runs a due validation inside the training epoch, before this hook: it is not training time
        self.epoch_seconds.append(time.perf_counter() - self._start - self._validation_in_epoch)
        self.epoch_cpu_seconds.append(time.process_time() - self._cpu_start - self._validation_cpu_in_epoch)
        self._start = None
        pl_module.log("perf/epoch_seconds", self.epoch_seconds[-1])

    def on_validation_start(self, trainer, pl_module) -> None:
        self._eval_start = time.perf_counter()
        self._eval_cpu_start = time.process_time()

    def on_validation_end(self, trainer, pl_module) -> None:
        seconds = time.perf_counter() - self._eval_start
        self.eval_seconds["validation"] += seconds
        self._validation_in_epoch += seconds
        cpu = time.process_time() - self._eval_cpu_start
        self._validation_cpu_in_epoch += cpu
        self.validation_cpu_seconds += cpu
        self.validation_checks += 1

    def on_test_start(self, trainer, pl_module) -> None:
        self._eval_start = time.perf_counter()

    def on_test_end(self, trainer, pl_module) -> None:
        self.eval_seconds["test"] += time.perf_counter() - self._eval_start

    def state_dict(self) -> dict:
        """Saved in checkpoints: a resumed run keeps counting, and the main process of a spawned DDP run reads
        the figures of its workers back from the checkpoint."""
        # plain Python numbers only: checkpoints load with torch.load(weights_only=True)
        return {"epochs_run": int(self.epochs_run),
                "epoch_seconds": [float(s) for s in self.epoch_seconds],
                "epoch_cpu_seconds": [float(s) for s in self.epoch_cpu_seconds],
                "eval_seconds": {k: float(v) for k, v in self.eval_seconds.items()},
                "validation_checks": int(self.validation_checks),
                "validation_cpu_seconds": float(self.validation_cpu_seconds),
                "peak_memory_mb": float(max(self._peak_elsewhere, peak_memory_mb()))}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_seconds = list(state["epoch_seconds"])
        self.epochs_run = int(state.get("epochs_run", len(self.epoch_seconds)))  # older checkpoints: timed epochs
        self.epoch_cpu_seconds = list(state.get("epoch_cpu_seconds", []))
        self.validation_checks = int(state.get("validation_checks", 0))
        self.validation_cpu_seconds = float(state.get("validation_cpu_seconds", 0.0))
        self.eval_seconds = {**self.eval_seconds, **state["eval_seconds"]}
        self._peak_elsewhere = max(self._peak_elsewhere, float(state["peak_memory_mb"]))

    @property
    def summary(self) -> dict:
        epochs = self.epoch_seconds[1:] or self.epoch_seconds  # the first epoch includes warm-up
        cpu = self.epoch_cpu_seconds[1:] or self.epoch_cpu_seconds
        return {
            "epochs_run": self.epochs_run,
            "seconds_per_epoch": sum(epochs) / len(epochs) if epochs else float("nan"),
            "cpu_seconds_per_epoch": sum(cpu) / len(cpu) if cpu else float("nan"),
            "validation_checks": self.validation_checks,
            "train_seconds": sum(self.epoch_seconds),
            "validation_seconds": self.eval_seconds["validation"],
            "validation_cpu_seconds": self.validation_cpu_seconds,
            "test_seconds": self.eval_seconds["test"],
            "peak_memory_mb": max(self._peak_elsewhere, peak_memory_mb()),
        }


class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt``: the latest training state, which an interrupted run resumes from and which
    ``test_checkpoint=last`` tests.

    Written at the end of every ``every_n_epochs``-th training epoch (the epochs that validate), after every other
    epoch-end hook (the epoch's validation, its iterative round, the timer's count): a resume starts the next epoch with
    nothing of this one lost or replayed. (Lightning's own ``save_last`` refreshes ``last.ckpt`` only when a new best
    is saved, and with ``check_val_every_n_epoch > 1`` it saves at validation end, *before* those hooks.)

    And once more when training ends on an epoch that was not saved (a run shorter than one validation interval, a
    ``max_epochs`` that is not a multiple of it): every run that trained leaves the weights it ended with.
    """

    def __init__(self, dirpath: str | Path, every_n_epochs: int = 1, filename: str = "last") -> None:
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1, every_n_epochs=every_n_epochs,
                         save_on_train_epoch_end=True, enable_version_counter=False, auto_insert_metric_name=False)

    @property
    def file(self) -> Path:
        """The checkpoint's path (fixed: no metric or version in its name)."""
        return Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # skipped when the final step is saved already, or when no step was taken at all (max_epochs=0)
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


def instantiate_callbacks(callbacks_cfg: Mapping | None, with_logger: bool) -> list[Callback]:
    """The callbacks of ``conf/callbacks`` (entries set to null are left out), always with a :class:`RunTimer` (the
    run summary reports its figures). Learning-rate monitors are left out without a logger (Lightning refuses them)."""
    callbacks = [instantiate(c) for c in (callbacks_cfg or {}).values() if c is not None]
    if not with_logger:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not any(isinstance(c, RunTimer) for c in callbacks):
        callbacks.append(RunTimer())
    return callbacks
