"""One process per run directory: a lock file that makes a second process refuse a job that is still running.

A re-run of a sweep resumes interrupted jobs in place (``last.ckpt``); if the interrupted job is in fact still running
(e.g. joblib's workers outlive a killed main process), two processes would train, checkpoint and log into the same
directory. ``<run dir>/.run.lock`` holds ``<host> <pid>`` of the process that trains there; it is removed when the run
ends. A lock left by a process that no longer exists on this host (a killed run) is taken over; a lock of another host
is respected (its liveness cannot be checked here), and the error says how to clear it.

Only the process of global rank 0 takes the lock: with Lightning's ``ddp`` launcher or SLURM tasks the other ranks
run the same entry point in the same directory (``RANK`` / ``SLURM_PROCID`` / ``LOCAL_RANK`` tell them apart).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK_NAME", "RunDirectoryBusy", "run_lock"]

LOCK_NAME = ".run.lock"


class RunDirectoryBusy(RuntimeError):
    """Another live process trains in this run directory."""


def _rank() -> int:
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _create(path: Path, owner: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(owner)
    return True


@contextmanager
def run_lock(output_dir: str | Path) -> Iterator[None]:
    """Hold ``<output_dir>/.run.lock`` while the block runs (see the module docstring).

    Raises:
        RunDirectoryBusy: a live process (or one on another host) holds the lock.
    """
    if _rank() != 0:
        yield
        return
    path = Path(output_dir) / LOCK_NAME
    host = socket.gethostname()
    owner = f"{host} {os.getpid()}"
    if not _create(path, owner):
        holder = path.read_text(encoding="utf-8").strip() if path.exists() else ""
        held_host, _, pid = holder.partition(" ")
        if held_host != host or not pid.isdigit() or _alive(int(pid)):
            where = f"process {pid} on {held_host}" if pid.isdigit() else f"an unreadable lock ({holder!r})"
            raise RunDirectoryBusy(
                f"{output_dir} is in use by {where} (lock file {path}). Wait for that run to finish, stop it (for a "
                "joblib sweep: its whole process group), or write elsewhere (hydra.run.dir=... / hydra.sweep.dir=...). "
                f"If that process is gone, delete {path}."
            )
        path.unlink(missing_ok=True)  # left by a process that no longer exists: take it over
        if not _create(path, owner):
            raise RunDirectoryBusy(f"{output_dir}: another process took the lock {path} at the same moment")
    try:
        yield
    finally:
        try:
            if path.read_text(encoding="utf-8").strip() == owner:
                path.unlink()
        except FileNotFoundError:
            pass
