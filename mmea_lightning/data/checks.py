"""Checks shared by the dataset loaders (:mod:`.loader`, :mod:`.tsv_pair`): names and paths that are safe in cache
file names, image vectors that carry information, and warnings recorded in the pair's notes."""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

log = logging.getLogger(__name__)

_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_path_component(value: object, key: str) -> str:
    """``value`` when it is safe as one file-name component (it names cache files), else a ``ValueError``.

    Safe: ``[A-Za-z0-9][A-Za-z0-9_.-]*`` without ``..`` -- no separator, no parent reference, no hidden name, so
    ``<cache_dir>/features/<value>-<key>.pt`` or ``<cache_dir>/seeds/<value>/`` stays inside its folder.
    """
    text = str(value) if value is not None else ""
    if not _SAFE_COMPONENT.fullmatch(text) or ".." in text:
        raise ValueError(f"{key}={value!r} is not a safe file name: it becomes part of cache paths, so it must be one "
                         "path component of letters, digits, '_', '.' and '-' (starting with a letter or digit, no "
                         f"'..', '/' or '\\'). Fix: rename it, e.g. {key}=fbdb15k.")
    return text


def check_relative_path(value: object, key: str) -> str:
    """``value`` when it is a relative path that stays under the data root, else a ``ValueError``."""
    text = str(value) if value is not None else ""
    parts = re.split(r"[\\/]", text)
    absolute = (PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute()
                or bool(PureWindowsPath(text).drive) or text.startswith(("/", "\\")))
    if not text or absolute or ".." in parts:
        raise ValueError(f"{key}={value!r} must be a non-empty path relative to the data root without '..' parts "
                         "(files are read under data_dir only). Fix: give the path below data_dir, e.g. "
                         "folder: FBDB15K/norm, or point data_dir at the root that holds the files.")
    return text


def warn(notes: list[str], message: str) -> None:
    """Log ``message`` as a warning and record it in the pair's notes (they reach ``metrics.json``)."""
    log.warning("%s", message)
    notes.append(message)


def settle_link_conflicts(conflicts: list, one_to_one: bool, notes: list[str], what: str) -> None:
    """Links that are not 1-to-1 (``conflicts``: the readers' :class:`DataFormatError` per offending line): the
    first is raised when the dataset declares its links 1-to-1 (``gold_one_to_one``), else each is kept with a
    warning recorded in ``notes`` (``what``: how the note names the links and why they are kept)."""
    if conflicts and one_to_one:
        raise conflicts[0]
    for conflict in conflicts:
        warn(notes, f"{what}: {conflict.path}, line {conflict.line}: {conflict.problem}")


def informative_images(vectors: dict[int, np.ndarray], path: Path, notes: list[str]) -> dict[int, np.ndarray] | None:
    """The image vectors that carry information, or ``None`` when none does; each drop is a recorded warning.

    An all-zero vector says nothing about its entity: that entity counts as having no image (it then gets the
    stand-in vector of entities without one, and ``masks['image']`` is false). When fewer than two different
    vectors remain (all zero, all identical, or a single one), images cannot tell any entity from another: the image
    modality is absent -- never reported as used.
    """
    zero = [ent for ent, vec in vectors.items() if not vec.any()]
    if zero:
        warn(notes, f"{path}: {len(zero)} entit{'y has' if len(zero) == 1 else 'ies have'} an all-zero image "
                    f"vector (e.g. entity {zero[0]}), counted as having no image")
        vectors = {ent: vec for ent, vec in vectors.items() if vec.any()}
    first = next(iter(vectors.values()), None)
    if first is None or all(np.array_equal(vec, first) for vec in vectors.values()):  # stops at the first difference
        what = "every vector is all-zero" if first is None else f"the {len(vectors)} non-zero vector(s) are identical"
        warn(notes, f"{path}: {what}, so images cannot tell entities apart: the image modality is absent")
        return None
    return vectors
