"""How many CPU threads a run's torch kernels use (the ``threads`` setting).

torch's own default is one thread per core. Its kernels wait for their slowest thread at every operation, so as soon
as another process holds one of the cores, every operation waits for a thread that is not running. Measured on a
2-core machine whose cores were busy with two other training jobs (EVA, ``logger=none``): the toy pair trained at
1.5-1.9 s/epoch with 2 threads against 0.07-0.11 s/epoch with 1; DBP15K ZH-EN at 31 s/epoch with 2 threads against
7.3 s/epoch with 1. A thread too few costs at most the parallel share of an idle machine; a thread too many costs
several times the run. ``threads=auto`` (the default) therefore takes only the cores that are free:

* the cores this process may run on (its CPU affinity: a SLURM allocation, ``taskset``, a container's limit),
* divided by the jobs that Hydra's launcher runs side by side on this machine (``hydra.launcher.n_jobs`` of the
  joblib launcher, ``hydra/launcher=local_parallel``),
* and no more than the cores left idle by other processes when the run starts (measured over a fraction of a second
  from ``/proc/stat``; elsewhere from the 1-minute load average),
* at least 1.

``threads=<n>`` sets it; ``threads=null`` keeps torch's default. Thread counts change the order of float sums, so
two counts may differ in the last bits of a result (the run identity does not compare them). ``auto`` is therefore
pinned once per run (:func:`pin_threads`): the run's ``config.yaml`` and ``metrics.json`` (``run.threads``) record the
count, and a resumed run takes the count of the run it continues, so that the resume stays bit-identical.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

__all__ = ["THREADS_AUTO", "auto_threads", "available_cores", "check_threads", "idle_cores", "parallel_jobs",
           "pin_threads", "set_threads"]

log = logging.getLogger(__name__)

THREADS_AUTO = "auto"


def check_threads(value) -> None:
    """Raise ``ValueError`` with the fix unless ``value`` is ``auto``, ``null`` or a positive integer."""
    if value is None or value == THREADS_AUTO:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"threads={value!r}: pass auto (the cores that are free, split between parallel jobs), a "
                         "positive integer, or null for torch's default (one thread per core).")


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parallel_jobs(cores: int) -> int:
    """How many jobs Hydra's launcher runs side by side in this machine's cores: ``hydra.launcher.n_jobs`` (joblib's
    convention: ``-1`` is one job per core, ``-2`` all cores but one, ...), else 1 (a single run, the basic launcher's
    one job at a time, a SLURM job with its own allocation)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        n_jobs = HydraConfig.get().launcher.get("n_jobs")
    except (ValueError, ImportError, AttributeError):  # not inside a Hydra application (tests, the Python API)
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    return max(1, n_jobs if n_jobs > 0 else cores + 1 + n_jobs)


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all cores since boot, from ``/proc/stat``; None where there is no such file."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return idle, sum(values[:8])  # guest time is already counted in user time


def idle_cores(cores: int, sample_seconds: float = 0.3) -> float:
    """How many of ``cores`` other processes leave idle now: the machine's idle share over ``sample_seconds``
    (this process sleeps meanwhile) times the cores, or ``cores`` minus the 1-minute load average without
    ``/proc/stat``."""
    first = _cpu_times()
    if first is not None:
        time.sleep(sample_seconds)
        second = _cpu_times()
        total = second[1] - first[1]
        if total > 0:
            share = (second[0] - first[0]) / total
            return max(0.0, min(1.0, share)) * (os.cpu_count() or cores)
    try:
        return max(0.0, cores - os.getloadavg()[0])
    except OSError:
        return float(cores)


def auto_threads() -> int:
    """``threads=auto``: this process's cores split between the launcher's parallel jobs, capped by the idle cores."""
    cores = available_cores()
    share = cores // parallel_jobs(cores)
    idle = idle_cores(cores)
    return max(1, min(share, round(idle)))


def pin_threads(setting, interrupted=None):
    """The ``threads`` value a run records and uses: ``auto`` becomes a count -- the ``interrupted`` run's count when
    this run continues one that had a count, else :func:`auto_threads`; a count or null stays as it is."""
    check_threads(setting)
    if setting != THREADS_AUTO:
        return setting
    if isinstance(interrupted, int) and not isinstance(interrupted, bool) and interrupted >= 1:
        log.info("threads=auto: %d, as in the interrupted run this one continues", interrupted)
        return interrupted
    return auto_threads()


def set_threads(setting) -> int:
    """Apply the ``threads`` setting (``auto``, a count, or null for torch's default); returns the count in use."""
    check_threads(setting)
    if setting is None:
        return torch.get_num_threads()
    threads = auto_threads() if setting == THREADS_AUTO else int(setting)
    torch.set_num_threads(threads)
    log.info("torch uses %d CPU thread(s) (threads=%s)", threads, setting)
    return threads
