"""One process per run directory: a lock that makes a second process refuse a job that is still running.

A re-run of a sweep resumes interrupted jobs in place (``last.ckpt``); if the interrupted job is in fact still running
(e.g. joblib's workers outlive a killed main process), two processes would train, checkpoint and log into the same
directory. ``<run dir>/.run.lock`` is the lock:

* Mutual exclusion is an ``fcntl.flock`` on that file, held for the whole run. The kernel (or the shared file system's
  lock manager) releases it when the process ends, however it ends, so there is no stale lock to take over and no
  window in which two processes both decide a lock is stale: of any number of simultaneous starts, exactly one gets it.
* The file's text, ``<host> <pid>``, says who holds it (for the error message). Files written by a process that held
  no ``flock`` (older versions of this module) are still honoured: a lock text naming a live process on this host, or
  any process on another host (whose liveness cannot be checked here), is respected and the error says how to clear
  it; one naming a dead process on this host is taken over -- while holding the ``flock``, hence atomically.
* The file is removed when the run ends (while still locked). A process that locked a file that was removed in the
  meantime sees that the path no longer names its file and starts again.

Only the process of global rank 0 takes the lock: with Lightning's ``ddp`` launcher or SLURM tasks the other ranks
run the same entry point in the same directory (``RANK`` / ``SLURM_PROCID`` / ``LOCAL_RANK`` tell them apart).
"""

from __future__ import annotations

import fcntl
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


def _busy(output_dir: Path, path: Path, holder: str) -> RunDirectoryBusy:
    held_host, _, pid = holder.partition(" ")
    where = f"process {pid} on {held_host}" if pid.isdigit() else f"another process ({holder!r})"
    return RunDirectoryBusy(
        f"{output_dir} is in use by {where} (lock file {path}). Wait for that run to finish, stop it (for a "
        "joblib sweep: its whole process group), or write elsewhere (hydra.run.dir=... / hydra.sweep.dir=...). "
        f"If that process is gone, delete {path}."
    )


def _acquire(output_dir: Path, path: Path, owner: str) -> int:
    """An open descriptor of ``path`` holding its ``flock``, the file's text set to ``owner``."""
    host = socket.gethostname()
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = path.read_text(encoding="utf-8").strip() if path.exists() else ""
            raise _busy(output_dir, path, holder) from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # its holder removed it between our open and our flock: lock the new file
            os.close(fd)
            continue
        holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
        held_host, _, pid = holder.partition(" ")
        if holder and (held_host != host or not pid.isdigit() or _alive(int(pid))):
            os.close(fd)  # a lock text without a flock: an older writer, or another host's process
            raise _busy(output_dir, path, holder)
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode("utf-8"), 0)
        return fd
    raise RunDirectoryBusy(f"{output_dir}: could not take the lock {path} (it kept being replaced)")


@contextmanager
def run_lock(output_dir: str | Path) -> Iterator[None]:
    """Hold ``<output_dir>/.run.lock`` while the block runs (see the module docstring).

    Raises:
        RunDirectoryBusy: a live process (or one on another host) holds the lock.
    """
    if _rank() != 0:
        yield
        return
    output_dir = Path(output_dir)
    path = output_dir / LOCK_NAME
    fd = _acquire(output_dir, path, f"{socket.gethostname()} {os.getpid()}")
    try:
        yield
    finally:
        try:
            path.unlink(missing_ok=True)  # still ours: nobody else can hold the flock
        finally:
            os.close(fd)  # releases the flock
