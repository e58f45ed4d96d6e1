"""What a run directory's results were computed from, so that a finished or interrupted run is reused only for the
very same experiment.

A run's identity is

* ``settings``: every key of the resolved config (dotted, e.g. ``model.module.aligner.dropout``) except those that
  cannot change a reported number (:data:`NON_RESULT_KEYS`: where things are written, loggers, the progress bar,
  thread count, ``resume`` and ``data_dir`` / ``dataset.path``, whose *content* is covered by ``data``);
* ``data``: the SHA-256 of every input file's bytes by role (:func:`~mmea_lightning.data.fingerprint.input_digests`),
  so the same data under another path is the same run and other data under the same path is not.

It is written to ``<run dir>/run_identity.json`` when a run starts and recorded in ``metrics.json``. Re-running into
a directory whose identity differs -- with a finished ``metrics.json`` or an interrupted ``last.ckpt`` -- is refused
with the list of what differs (:class:`RunIdentityMismatch`); ``resume=false`` starts that directory over.

``threads`` is treated as not changing results: it changes the order of float sums inside BLAS kernels, so two thread
counts may differ in the last bits, never in a way a reported figure at 4 decimals shows (see the README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["IDENTITY_FILE", "NON_RESULT_KEYS", "RunIdentityMismatch", "check_same_run", "identity_differences",
           "run_identity"]

IDENTITY_FILE = "run_identity.json"
IDENTITY_VERSION = 1

#: config keys (and everything below them) that cannot change a reported number
NON_RESULT_KEYS = (
    "paths", "hydra", "logger", "task_name", "threads", "resume", "data_dir",
    "data.data_dir", "data.cache_dir", "data.output_dir",
    "dataset.path", "data.dataset.path",  # a TSV pair's folder: its files' content is in ``data``
    "trainer.enable_progress_bar", "trainer.default_root_dir", "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "callbacks.lr_monitor", "callbacks.run_timer", "callbacks.last_checkpoint",
    "callbacks.model_checkpoint.dirpath", "callbacks.test_probe", "optimized_metric",
)


class RunIdentityMismatch(ValueError):
    """The run directory holds a run of a different experiment (settings or data)."""


def flatten_config(node: Any, prefix: str, out: dict[str, Any]) -> None:
    """Write the leaves of a nested config ``node`` into ``out`` under dotted keys (``model.module.lr``)."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            flatten_config(value, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = node


def is_non_result_key(key: str) -> bool:
    """``key`` (dotted) is or lies below one of :data:`NON_RESULT_KEYS`."""
    return any(key == k or key.startswith(k + ".") for k in NON_RESULT_KEYS)


_excluded = is_non_result_key


def run_identity(cfg: DictConfig, data: dict[str, str]) -> dict:
    """The identity of the run ``cfg`` on the data fingerprinted as ``data`` (JSON-able)."""
    flat: dict[str, Any] = {}
    flatten_config(OmegaConf.to_container(cfg, resolve=True), "", flat)
    settings = {k: v for k, v in sorted(flat.items()) if not _excluded(k)}
    identity = {"version": IDENTITY_VERSION, "settings": settings, "data": dict(sorted(data.items()))}
    return json.loads(json.dumps(identity, default=str))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def identity_differences(stored: dict, current: dict) -> list[str]:
    """Human-readable differences between two identities (empty when they are the same run)."""
    if stored.get("version") != current.get("version"):
        return [f"identity format {stored.get('version')} (stored) vs {current.get('version')} (now)"]
    lines = []
    for part, label in (("settings", "setting"), ("data", "data file")):
        old, new = stored.get(part, {}), current.get(part, {})
        if part == "settings":  # a key declared not result-relevant since the stored run was written is ignored
            old = {k: v for k, v in old.items() if not _excluded(k)}
        for key in sorted(set(old) | set(new)):
            if key not in old:
                lines.append(f"{label} {key}: not in the stored run, now {_short(new[key])}")
            elif key not in new:
                lines.append(f"{label} {key}: {_short(old[key])} in the stored run, now not set")
            elif old[key] != new[key]:
                if part == "data":
                    lines.append(f"{label} {key}: content differs (sha256 {old[key][:12]} stored, {new[key][:12]} now)")
                else:
                    lines.append(f"{label} {key}: {_short(old[key])} stored, {_short(new[key])} now")
    return lines


def check_same_run(output_dir: Path, identity: dict, what: str) -> None:
    """Raise :class:`RunIdentityMismatch` unless ``output_dir``'s stored identity equals ``identity``.

    Args:
        what: what would be reused (for the message), e.g. "the finished metrics.json".
    """
    path = Path(output_dir) / IDENTITY_FILE
    if not path.is_file():
        raise RunIdentityMismatch(
            f"{output_dir} holds {what} but no {IDENTITY_FILE} (written by an older version, or not by a run): "
            "whether it is the same experiment cannot be checked. Write this run elsewhere (hydra.run.dir=... / "
            "hydra.sweep.dir=...) or start that directory over with resume=false."
        )
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise RunIdentityMismatch(f"{path} is unreadable ({err}); start that directory over with resume=false.") \
            from None
    differences = identity_differences(stored, identity)
    if differences:
        shown = "; ".join(differences[:8]) + (f"; and {len(differences) - 8} more" if len(differences) > 8 else "")
        raise RunIdentityMismatch(
            f"{output_dir} holds {what} of a different configuration ({shown}). Write this run elsewhere "
            "(hydra.run.dir=... / hydra.sweep.dir=...), or start that directory over with resume=false."
        )
