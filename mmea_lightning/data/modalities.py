"""Modality names and choosing the modalities an aligner uses from what the data really carries.

In ``data/`` because the names are the feature tables' (``FeatureSet.modalities``): the seed generators, the
aligners and the run summary all read them, so they live below all three.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

SURFACE_MODALITIES = ("name_sbert", "name_char")  # the "with surface" setting: sentence embeddings + bigrams


def resolve_modalities(requested: Sequence[str], present: Mapping[str, bool], *, strict: bool, model: str,
                       surface: bool = False) -> tuple[list[str], list[str]]:
    """``(used, dropped)``: the requested modalities (plus the name modalities with ``surface``) the data has, and
    those it lacks.

    With ``strict`` a lacking modality is an error; otherwise it is dropped, logged, and recorded in the results.
    """
    requested = list(requested) + [m for m in SURFACE_MODALITIES if surface and m not in requested]
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


def describe_modalities(used: Sequence[str], dropped: Sequence[str], weights: Sequence[float] | None = None) -> dict:
    """What an aligner records about its modalities in the results."""
    info = {"modalities_used": list(used), "modalities_dropped": list(dropped)}
    if weights is not None:
        info["modality_weights"] = dict(zip(used, (float(w) for w in weights)))
    return info
