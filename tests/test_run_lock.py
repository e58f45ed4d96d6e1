"""One process per run directory: a live holder is refused, a dead one's lock is taken over, other ranks skip it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from mmea_lightning.run_lock import LOCK_NAME, RunDirectoryBusy, run_lock


def test_lock_is_held_during_the_run_and_removed_after(tmp_path):
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{socket.gethostname()} {os.getpid()}"
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_holder_is_refused_and_keeps_its_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{socket.gethostname()} {holder.pid}")
        with pytest.raises(RunDirectoryBusy, match=f"process {holder.pid}"):
            with run_lock(tmp_path):
                pass
        assert (tmp_path / LOCK_NAME).read_text().endswith(str(holder.pid))
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(f"{socket.gethostname()} {dead.pid}")
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().endswith(str(os.getpid()))


def test_another_hosts_lock_is_respected_and_other_ranks_do_not_lock(tmp_path, monkeypatch):
    (tmp_path / LOCK_NAME).write_text("some-other-host 1")
    with pytest.raises(RunDirectoryBusy, match="delete"):
        with run_lock(tmp_path):
            pass
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP child rank in the same directory
    with run_lock(tmp_path):
        pass
    assert (tmp_path / LOCK_NAME).read_text() == "some-other-host 1"
