"""Atomic file writes: the target is either absent, the old version or complete -- never half-written.

Every writer goes through a temporary file in the target's directory and ``os.replace``; the temporary file is
removed when the write fails. The file gets the mode a plain ``open(path, "w")`` would give it (``0o666`` minus
the umask), not ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_torch_atomic", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: str | Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """``payload`` as indented JSON (non-JSON values through ``str``)."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def save_torch_atomic(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path``."""
    _atomic(path, lambda tmp: torch.save(obj, tmp))
