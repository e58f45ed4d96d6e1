"""The Python API: train, evaluate and predict without the command line (``docs/inference.md``)::

    import mmea_lightning

    summary = mmea_lightning.run(["dataset=toy", "model=mclea", "model.max_epochs=50", "threads=1"])
    table = mmea_lightning.predict(summary["run"]["best_checkpoint"], top_k=5, decoding="greedy")
    table.attrs["metrics"]["test/hits@1"]

:func:`run` composes the shipped configs exactly as ``python -m mmea_lightning.train <overrides>`` does (same
defaults, same run directory ``hydra.run.dir``, same ``metrics.json``) and returns the summary; :func:`predict`
is ``python -m mmea_lightning.predict`` returning a ``pandas.DataFrame``. One run per call (no ``-m`` sweeps: loop
over :func:`run`, or use the CLI's launchers). Logging is left to the caller: no ``train.log`` is written.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mmea_lightning.config_source import CONFIG_PATH

__all__ = ["compose_config", "load_checkpoint", "predict", "run"]


@contextmanager
def hydra_job(overrides: Sequence[str] = (), config_name: str = "train") -> Iterator[DictConfig]:
    """The job config of ``config_name`` with ``overrides``, as a single-run Hydra application sees it.

    Hydra's compose API alone leaves ``HydraConfig`` unset (``${hydra:runtime.output_dir}`` then fails with
    ``HydraConfig was not set``); here the run directory is made absolute (``hydra.run.dir``, like the CLI),
    ``HydraConfig`` is set for the duration of the block (the previous one is restored after) and the yielded config
    is fully resolved."""
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a list of strings such as ['model.max_epochs=5'], not {overrides!r}")
    if GlobalHydra.instance().is_initialized():
        raise RuntimeError("a Hydra application is already running in this process (GlobalHydra is initialized): "
                           "call mmea_lightning.train.run(cfg) with its config instead.")
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3", job_name=config_name):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.RUN
        cfg.hydra.runtime.output_dir = os.path.abspath(str(cfg.hydra.run.dir))
    holder = HydraConfig.instance()
    previous = holder.cfg
    holder.set_config(cfg)
    try:
        job = copy.deepcopy(cfg)
        with read_write(job), open_dict(job):
            del job["hydra"]
        OmegaConf.resolve(job)
        yield job
    finally:
        holder.cfg = previous


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """The resolved job config ``python -m mmea_lightning.<config_name> <overrides>`` would run (its run directory
    included): to inspect, or to pass to :func:`mmea_lightning.train.run`."""
    with hydra_job(overrides, config_name) as cfg:
        return cfg


def run(overrides: Sequence[str] = (), config_name: str = "train") -> dict:
    """Train and test one configuration, as ``python -m mmea_lightning.train <overrides>``; returns the summary
    that ``metrics.json`` holds (test metrics, ``val/best_mrr``, ``run`` with ``output_dir`` and
    ``best_checkpoint``). Errors are raised (``ValueError`` & co. with the fix), not turned into an exit status."""
    from mmea_lightning import train

    with hydra_job(overrides, config_name) as cfg:
        return train.run(cfg)


def load_checkpoint(ckpt_path: str | Path, data_dir: str | Path | None = None,
                    cache_dir: str | Path | None = None):
    """The trained module and its data, from a checkpoint alone (:func:`~mmea_lightning.lightning.restore.
    restore_run`): ``.module`` (eval mode; ``.module.embeddings()`` is ``(N, D)``), ``.datamodule`` (``.pair``,
    ``.split``, ``.features``), ``.config``."""
    from mmea_lightning.lightning.restore import restore_run

    return restore_run(ckpt_path, data_dir=data_dir, cache_dir=cache_dir)


def predict(ckpt_path: str | Path, top_k: int = 10, decoding: str | None = None, entities: str = "test",
            data_dir: str | Path | None = None, cache_dir: str | Path | None = None, evaluate: bool = True,
            output_dir: str | Path | None = None) -> pd.DataFrame:
    """The predictions of ``python -m mmea_lightning.predict`` as a DataFrame (the columns of ``predictions.tsv``).

    Args:
        ckpt_path: a checkpoint written by ``train``.
        top_k: candidates per query entity.
        decoding: ``None``, ``"greedy"`` or ``"hungarian"``: adds the ``aligned`` column (1 on each query's
            one-to-one partner; ``table[table.aligned == 1]`` is the alignment).
        entities: ``"test"``, ``"unaligned"`` or ``"all"`` (see :mod:`mmea_lightning.predict`).
        data_dir / cache_dir: where the data / the feature cache are, when not where the checkpoint says.
        evaluate: compute the test metrics (``attrs["metrics"]``).
        output_dir: also write ``predictions.tsv``, ``alignment.tsv``, ``metrics.json`` there.

    Returns:
        The predictions; ``attrs["metrics"]`` holds the test metrics, ``attrs["predict"]`` what was predicted from
        what.
    """
    from mmea_lightning.predict import predict_checkpoint, write_prediction

    prediction = predict_checkpoint(ckpt_path, top_k=top_k, decoding=decoding, entities=entities,
                                    data_dir=data_dir, cache_dir=cache_dir, evaluate=evaluate)
    info = dict(prediction.info)
    if output_dir is not None:
        info["files"] = write_prediction(prediction, output_dir)
    table = prediction.predictions
    table.attrs["metrics"] = dict(prediction.metrics)
    table.attrs["predict"] = info
    return table
