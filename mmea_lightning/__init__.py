"""mmea-lightning: multi-modal entity alignment experiments on PyTorch Lightning + Hydra.

The Python API (``docs/inference.md``; the command line is ``python -m mmea_lightning.train`` / ``.predict``)::

    import mmea_lightning

    summary = mmea_lightning.run(["model=mclea", "model.max_epochs=50"])        # -> metrics.json's summary
    table = mmea_lightning.predict(summary["run"]["best_checkpoint"], top_k=5)  # -> pandas.DataFrame
    restored = mmea_lightning.load_checkpoint(summary["run"]["best_checkpoint"])  # .module, .datamodule, .config

``import mmea_lightning`` stays light: torch, Lightning and Hydra are imported by the first call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from mmea_lightning.run_group import run_group

__version__ = "0.1.0"
__all__ = ["__version__", "compose_config", "load_checkpoint", "predict", "run"]

# `${mmea.if:${surface},a,b}` in the configs: `a` when the flag is true, else `b`.
if not OmegaConf.has_resolver("mmea.if"):
    OmegaConf.register_new_resolver("mmea.if", lambda flag, yes, no: yes if flag else no)
# `${mmea.run_group:}`: one name shared by every job of a Hydra multirun (W&B groups a sweep's runs by it).
if not OmegaConf.has_resolver("mmea.run_group"):
    OmegaConf.register_new_resolver("mmea.run_group", run_group)


def run(overrides: Sequence[str] = (), config_name: str = "train") -> dict:
    """Train and test one configuration, as ``python -m mmea_lightning.train <overrides>``: see
    :func:`mmea_lightning.api.run`."""
    from mmea_lightning import api

    return api.run(overrides, config_name)


def compose_config(overrides: Sequence[str] = (), config_name: str = "train"):
    """The resolved config the command line would run: see :func:`mmea_lightning.api.compose_config`."""
    from mmea_lightning import api

    return api.compose_config(overrides, config_name)


def load_checkpoint(ckpt_path: str | Path, data_dir: str | Path | None = None, cache_dir: str | Path | None = None):
    """The trained module and its data from a checkpoint alone: see :func:`mmea_lightning.api.load_checkpoint`."""
    from mmea_lightning import api

    return api.load_checkpoint(ckpt_path, data_dir=data_dir, cache_dir=cache_dir)


def predict(ckpt_path: str | Path, top_k: int = 10, decoding: str | None = None, entities: str = "test",
            data_dir: str | Path | None = None, **kwargs):
    """Rank ``top_k`` candidates per entity with a checkpoint -> ``pandas.DataFrame`` (``attrs["metrics"]``: its test
    metrics): see :func:`mmea_lightning.api.predict`. (Once the module ``mmea_lightning.predict`` is imported, the
    name is that module, which is callable the same way.)"""
    from mmea_lightning import api

    return api.predict(ckpt_path, top_k=top_k, decoding=decoding, entities=entities, data_dir=data_dir, **kwargs)
