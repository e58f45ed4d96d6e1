"""Atomic writes: complete or absent, and the mode of an ordinary file (not mkstemp's private 0600)."""

from __future__ import annotations

import os

import pytest

from mmea_lightning.atomic_files import write_json_atomic, write_text_atomic


def test_atomic_files_get_the_ordinary_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "metrics.json", {"a": 1})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "metrics.json").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_text_atomic(tmp_path / "f.txt", "old")

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_json_atomic(tmp_path / "f.txt", {"x": Boom()})
    assert (tmp_path / "f.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
