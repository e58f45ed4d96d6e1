"""Content fingerprints of the data files of a pair: what changed data can be told apart by, whatever its path.

``data_fingerprint(pair)`` hashes the *content* of every file the pair was read from (``pair.files``), keyed by
the file's role (``triples_1``, ``attributes:training_attrs_1``...), never by its path or modification time: the same
data under another root gives the same fingerprint, different data with the same size and mtime a different one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mmea_lightning.data.pair import KGPair

__all__ = ["data_fingerprint", "file_sha256"]

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(pair: KGPair) -> str:
    """A sha256 hex digest (64 characters) of the content of every file in ``pair.files``, by role, path-free."""
    digest = hashlib.sha256(b"mmea-data-v1")
    for role, path in sorted(pair.files.items()):
        digest.update(f"\0{role}\0{file_sha256(path)}".encode())
    return digest.hexdigest()
