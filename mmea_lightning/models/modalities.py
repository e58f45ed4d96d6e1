"""Choosing the modalities an aligner uses from what the data really carries."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)


def resolve_modalities(requested: Sequence[str], present: Mapping[str, bool], *, strict: bool,
                       model: str) -> tuple[list[str], list[str]]:
    """``(used, dropped)``: the requested modalities the data has, and those it lacks.

    With ``strict`` a lacking modality is an error; otherwise it is dropped, logged, and recorded in the results.
    """
    used = [m for m in requested if present.get(m, False)]
    dropped = [m for m in requested if not present.get(m, False)]
    if dropped:
        message = (f"{model}: the data has no {dropped} modality (present: "
                   f"{sorted(k for k, v in present.items() if v)}).")
        if strict:
            raise ValueError(message + " Remove it from model.modalities or set model.strict_modalities=false.")
        log.warning("%s Dropped; the results record it.", message)
    if not used:
        raise ValueError(f"{model}: none of the requested modalities {list(requested)} exists in the data.")
    return used, dropped
