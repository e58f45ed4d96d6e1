"""Which runs are repetitions of one setting, and what tells two settings apart.

A run's *setting* is its run identity (:mod:`mmea_lightning.run_identity`: every result-relevant key of the resolved
config and the content digest of every input file) without the repetition seeds (:data:`REPETITION_KEYS`), plus the
modalities the aligner used. Runs are pooled into one mean ± std only when their settings are equal, so runs on other
data, other modalities or other hyper-parameters are never averaged as if they were repetitions.

Runs written before ``run_identity.json`` existed get the same identity from their ``config.yaml`` (minus the keys
that cannot change a result) and ``metrics.json`` (``run.data_fingerprint``, ``run.modalities_used``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmea_lightning.run_identity import IDENTITY_FILE, NON_RESULT_KEYS, flatten_config, is_non_result_key, run_identity

log = logging.getLogger(__name__)

__all__ = ["REPETITION_KEYS", "ablation_keys", "run_setting", "setting_differences", "setting_id"]

#: settings whose runs are repetitions of one experiment (the model's seed and the split's seed, also as the data
#: module receives it)
REPETITION_KEYS: tuple[str, ...] = ("seed", "split_seed", "data.split_seed")
MODALITIES = "modalities used"

#: ``_target_`` values of classes that moved without changing what they compute (old path -> current path), so a
#: run recorded before the move is compared with one recorded after it as the same setting
MOVED_TARGETS: dict[str, str] = {
    "mmea_lightning.data.datamodule.AlignmentDataModule": "mmea_lightning.lightning.datamodule.AlignmentDataModule",
}


def run_setting(run_dir: Path, metrics: dict, config: DictConfig) -> dict:
    """``{"settings": {dotted key: value}, "data": {role: sha256 or "absent"}, "modalities": [...]}`` of one run.

    From ``<run_dir>/run_identity.json`` when it is there, else from ``config`` (the run's ``config.yaml``) and
    ``metrics["run"]["data_fingerprint"]``; the repetition seeds are left out.
    """
    info = metrics.get("run", {}) or {}
    identity = None
    path = run_dir / IDENTITY_FILE
    if path.is_file():
        try:
            identity = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            log.warning("%s is unreadable (%s): the run's setting is taken from config.yaml", path, err)
    if not isinstance(identity, dict) or not isinstance(identity.get("settings"), dict):
        identity = _identity_from_config(config, info.get("data_fingerprint") or {})
    # keys the current code knows cannot change a result are left out of identities recorded before it knew
    settings = {key: MOVED_TARGETS.get(value, value) if isinstance(value, str) else value
                for key, value in identity["settings"].items()
                if key not in REPETITION_KEYS and not is_non_result_key(key)}
    return {"settings": settings, "data": dict(identity.get("data") or {}),
            "modalities": list(info.get("modalities_used") or [])}


def _identity_from_config(config: DictConfig, data: dict) -> dict:
    try:
        return run_identity(config, data)
    except Exception as err:  # an interpolation that no longer resolves: compare the values as written
        log.warning("config.yaml does not resolve (%s): its settings are compared as written", err)
        flat: dict[str, Any] = {}
        flatten_config(OmegaConf.to_container(config, resolve=False), "", flat)
        return {"settings": _without(flat, NON_RESULT_KEYS), "data": data}


def _without(settings: dict, ignore: Iterable[str]) -> dict:
    ignore = tuple(ignore)
    return {key: value for key, value in settings.items()
            if not any(key == prefix or key.startswith(prefix + ".") for prefix in ignore)}


def setting_id(setting: dict, ignore: Iterable[str] = ()) -> str:
    """A short stable id of ``setting`` (:func:`run_setting`), leaving out ``ignore`` keys (and everything below)."""
    payload = {"settings": _without(setting["settings"], ignore), "data": setting["data"],
               "modalities": setting["modalities"]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]


def ablation_keys(settings: Iterable[dict]) -> list[str]:
    """The keys that name an ablation variant (``model.ablation``, ``model.module.aligner.ablation``, ...)."""
    return sorted({key for setting in settings for key in setting["settings"] if key.rsplit(".", 1)[-1] == "ablation"})


def _flat(setting: dict) -> dict[str, Any]:
    flat = dict(setting["settings"])
    flat.update({f"data file {role}": digest for role, digest in setting["data"].items()})
    flat[MODALITIES] = "+".join(setting["modalities"])
    return flat


def _shown(key: str, value: Any) -> str:
    if key.startswith("data file"):
        if value is None:
            return "not recorded"
        return "absent" if value == "absent" else f"sha256 {str(value)[:8]}"
    if key == MODALITIES:
        return value or "none recorded"
    if value is None:
        return "not set"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def setting_differences(settings: Sequence[dict], limit: int = 12) -> list[str]:
    """What differs between ``settings``: ``"key (value, value, ...)"`` per key, values in the given order.

    Keys that mirror another with the same values (``data.dataset.name`` and ``dataset.name``, ``data.batch_size``
    and ``model.batch_size``: the data module's copies) are shown once, by their shortest name.
    """
    flats = [_flat(setting) for setting in settings]
    keys = sorted({key for flat in flats for key in flat})
    differing = {}
    for key in keys:
        values = tuple(json.dumps(flat.get(key), sort_keys=True, default=str) for flat in flats)
        if len(set(values)) > 1:
            differing[key] = values
    kept = []
    for key, values in differing.items():
        twins = [other for other, other_values in differing.items()
                 if other_values == values and other.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
        if min(twins, key=lambda k: (k.count("."), k.startswith("data."), k)) == key:
            kept.append(key)
    kept.sort(key=lambda k: (k.startswith("data file"), k == MODALITIES, k))
    lines = [f"{key} ({', '.join(_shown(key, flat.get(key)) for flat in flats)})" for key in kept[:limit]]
    if len(kept) > limit:
        lines.append(f"and {len(kept) - limit} more")
    return lines
