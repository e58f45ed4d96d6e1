"""The run directory: one process at a time, reused only for the very same experiment, skipped when finished and
continued when interrupted.

:func:`open_run_directory` is what a run does before it trains:

1. take the directory's lock (:func:`~mmea_lightning.run_lock.run_lock`, held until the run ends): a job still
   running elsewhere in this directory is refused, not trained twice in the same place;
2. compute the run's identity (every result-relevant setting and the content hash of every input file,
   :mod:`mmea_lightning.run_identity`);
3. with ``resume=true`` (the default): a directory whose ``metrics.json`` exists holds a finished run -- returned as
   it is (skipped); one with ``checkpoints/last.ckpt`` holds an interrupted run -- continued from that checkpoint.
   Either only when the stored ``run_identity.json`` equals this run's, otherwise the run is refused with the list of
   differences. ``resume=false`` starts the directory over (deletes only the checkpoint files and ``metrics.json``
   an earlier run wrote). ``ckpt_path=<file>`` continues from that checkpoint instead;
4. :meth:`RunDirectory.record` then writes the resolved ``config.yaml`` and ``run_identity.json`` (atomically).

The summary a finished run leaves is ``metrics.json`` (:data:`SUMMARY_FILE`, :func:`write_summary`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from mmea_lightning.atomic_files import write_json_atomic, write_text_atomic
from mmea_lightning.data.fingerprint import input_digests
from mmea_lightning.data.loader import DatasetSpec, resolve_root
from mmea_lightning.run_identity import IDENTITY_FILE, check_same_run, run_identity
from mmea_lightning.run_lock import run_lock

__all__ = ["CONFIG_FILE", "SUMMARY_FILE", "RunDirectory", "completed_run", "input_fingerprint", "open_run_directory",
           "resume_checkpoint", "write_summary"]

log = logging.getLogger(__name__)

SUMMARY_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


@dataclass(frozen=True)
class RunDirectory:
    """A run directory, locked by this process.

    Attributes:
        path: the directory (``paths.output_dir``).
        identity: this run's identity (what ``run_identity.json`` holds).
        finished: the stored summary when the directory holds this very run, finished (nothing left to do).
        resume_from: the checkpoint training continues from (``ckpt_path``, or the interrupted run's
            ``last.ckpt``); None for a fresh start.
        interrupted_config: the ``config.yaml`` of the interrupted run that ``resume_from`` continues (plain
            containers), else None -- e.g. the thread count it used, so that the resume computes the same sums.
    """

    path: Path
    identity: dict
    finished: dict | None = None
    resume_from: str | None = None
    interrupted_config: dict[str, Any] | None = None

    def record(self, cfg: DictConfig) -> None:
        """Write the resolved ``config.yaml`` and ``run_identity.json`` of the run that starts here."""
        write_text_atomic(self.path / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
        write_json_atomic(self.path / IDENTITY_FILE, self.identity)


def input_fingerprint(cfg: DictConfig) -> dict[str, str]:
    """The content fingerprint of the dataset's input files (the toy pair is generated first if needed)."""
    spec = DatasetSpec.from_config(OmegaConf.to_container(cfg.dataset, resolve=True))
    return input_digests(spec, resolve_root(spec, cfg.get("data_dir"), cfg.paths.cache_dir))


def completed_run(output_dir: Path, identity: dict) -> dict | None:
    """The stored summary when ``output_dir`` already holds a finished run of this very experiment.

    Raises:
        RunIdentityMismatch: the directory holds a finished run of different settings or data.
    """
    metrics_path = Path(output_dir) / SUMMARY_FILE
    if not metrics_path.is_file():
        return None
    check_same_run(output_dir, identity, f"a finished run ({metrics_path})")
    return json.loads(metrics_path.read_text())


def resume_checkpoint(cfg: DictConfig, output_dir: Path, identity: dict) -> str | None:
    """``ckpt_path`` when given, else the interrupted run's ``checkpoints/last.ckpt`` (with ``resume=true``).

    Raises:
        RunIdentityMismatch: ``last.ckpt`` belongs to a run of different settings or data.
    """
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    last = Path(output_dir) / LAST_CHECKPOINT
    if not (cfg.get("resume", True) and last.is_file()):
        return None
    check_same_run(output_dir, identity, f"an interrupted run ({last})")
    return str(last)


def _start_over(output_dir: Path) -> None:
    """``resume=false``: no stale checkpoint or result of an earlier run survives next to the new ones -- and only
    what a run wrote is deleted (checkpoint files, ``metrics.json``), nothing else."""
    for stale in (output_dir / "checkpoints").glob("*.ckpt"):
        stale.unlink()
    (output_dir / SUMMARY_FILE).unlink(missing_ok=True)


@contextmanager
def open_run_directory(cfg: DictConfig) -> Iterator[RunDirectory]:
    """Lock ``paths.output_dir`` for the block and say what to do there (see the module docstring).

    Raises:
        RunDirectoryBusy: another live process runs in this directory.
        RunIdentityMismatch: the directory holds a finished or interrupted run of different settings or data.
    """
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(output_dir):
        identity = run_identity(cfg, input_fingerprint(cfg))
        if cfg.get("resume", True):
            finished = completed_run(output_dir, identity)
            if finished is not None:
                log.info("%s already holds this run's %s: skipped (resume=false re-runs it)", output_dir,
                         SUMMARY_FILE)
                print(f"skipped: {output_dir / SUMMARY_FILE} exists (finished earlier)")
                yield RunDirectory(output_dir, identity, finished=finished)
                return
        else:
            _start_over(output_dir)
        resume_from = resume_checkpoint(cfg, output_dir, identity)
        interrupted = None
        if resume_from:
            log.info("resuming from %s", resume_from)
            if Path(resume_from) == output_dir / LAST_CHECKPOINT:
                interrupted = _stored_config(output_dir)
        yield RunDirectory(output_dir, identity, resume_from=resume_from, interrupted_config=interrupted)


def _stored_config(output_dir: Path) -> dict | None:
    """The ``config.yaml`` a run left in ``output_dir`` (None when absent or unreadable: it only informs)."""
    try:
        stored = yaml.safe_load((output_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return stored if isinstance(stored, dict) else None


def write_summary(output_dir: Path, summary: dict) -> Path:
    """Write ``metrics.json`` (atomically: a reader sees the old file, or the complete new one)."""
    path = Path(output_dir) / SUMMARY_FILE
    write_json_atomic(path, summary)
    return path
