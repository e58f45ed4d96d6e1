"""The name that groups the runs of one sweep (W&B ``group``, report tables)."""

from __future__ import annotations

from pathlib import Path


def run_group(default: str = "single") -> str:
    """``sweep-<date>-<time>`` for every job of one Hydra multirun (from its sweep directory), else ``default``.

    Outside a Hydra application (tests composing the config, notebooks) there is no sweep: ``default``.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ValueError, ImportError):
        return default
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return default
    sweep_dir = Path(hydra_cfg.sweep.dir)
    return f"sweep-{sweep_dir.parent.name}-{sweep_dir.name}"
